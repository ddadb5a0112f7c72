"""inferline bench run [--quick]: the benchmark suite, results in benchmarks/results/.

inferline bench run --pipeline P [--concurrency 1,4,16] [--rate 100,200]: a load sweep of one published pipeline
on a running server (its edge or Triton, HTTP or gRPC), with Triton's server-side split per step; results as
JSON, markdown and PNG, and --compare against an earlier run.

inferline bench tune --pipeline P --p99-budget-ms B: the instances and batching settings with the most throughput
within the budget, searched on a scratch server (never the serving one); --publish makes them a new release."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from inferline.core.command import Parser, existing_file, new_dir, non_negative_float, positive_float, positive_int, run
from inferline.core.errors import UserError

PARTS = ("serving", "edge", "inprocess", "features", "validation", "batch", "monitor", "sketch")


def _parts(text: str) -> set[str]:
    if text.strip() == "all":
        return set(PARTS)
    only = {p.strip() for p in text.split(",") if p.strip()}
    unknown = only - set(PARTS)
    if unknown or not only:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a comma-separated subset of {','.join(PARTS)}")
    return only


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog or "inferline bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the suite (or, with --pipeline, one pipeline's load sweep); never run it beside other work (the "
        "figures become noise)",
    )
    run.add_argument(
        "--quick", action="store_true", help="shorter runs (about 5 minutes on 2 cores; with --pipeline: 2 s steps)"
    )
    run.add_argument(
        "--out",
        type=new_dir,
        default=None,
        help="directory for results and plots (default: benchmarks/results; with --pipeline: "
        ".inferline/bench/PIPELINE/release-N)",
    )
    run.add_argument(
        "--only",
        type=_parts,
        default="all",
        help=f"comma-separated subset of the parts ({', '.join(PARTS)}), or all",
    )
    run.add_argument("--reps", type=positive_int, default=None, help="interleaved repetitions (default: 3)")
    run.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help="seconds per load run (default: 10; 4 with --quick; with --pipeline: 5 per step, 2 with --quick)",
    )
    run.add_argument("--no-grpc", action="store_true", help="skip the gRPC load runs")
    run.set_defaults(func=_run, pipeline_only=_pipeline_options(run))
    run.set_defaults(option_defaults=vars(run.parse_args([])))  # each default as parsed (--only's is a set)
    tu = sub.add_parser(
        "tune",
        help="search instances, queue delay and preferred batch sizes for one release on a scratch server; never "
        "beside other work",
    )
    tu.add_argument("--pipeline", required=True, help="the published pipeline to tune")
    tu.add_argument("--p99-budget-ms", type=positive_float, required=True, help="the p99 latency budget at the load")
    tu.add_argument("--repository", default="triton_models", help="the model repository (only read)")
    tu.add_argument("--release", type=positive_int, default=None, help="the release to tune (default: the current)")
    tu.add_argument("--concurrency", type=positive_int, default=16, help="the reference load: requests in flight")
    tu.add_argument("--duration", type=positive_float, default=3.0, help="seconds per measured point")
    tu.add_argument("--passes", type=positive_int, default=2, help="coordinate-descent passes at most")
    tu.add_argument(
        "--warmup",
        type=non_negative_float,
        default=0.5,
        help="seconds of unrecorded load after each reload, before the point is measured",
    )
    tu.add_argument(
        "--gain-pairs",
        type=positive_int,
        default=3,
        help="interleaved re-measurements of the release's own settings against the chosen (the gain's ratios)",
    )
    tu.add_argument(
        "--instances",
        default=None,
        help="instance counts to try, comma-separated (default: 1, 2, 4, ... up to this machine's CPU cores, at most "
        "4 values: a local release's instances are CPU ones)",
    )
    tu.add_argument("--queue-delays-us", default="0,100,500,2000", help="max_queue_delay_microseconds to try")
    tu.add_argument(
        "--preferred",
        default="none;4,8;16,32",
        help="preferred batch sizes to try: ';' between candidates, ',' within one, 'none' for none",
    )
    tu.add_argument("--out", type=new_dir, default="benchmarks/results/tune", help="tune.json, tune.md, tune.png")
    tu.add_argument(
        "--publish",
        action="store_true",
        help="publish the chosen settings as a new release of the same model, made of the tuned release's own "
        "artifacts (not promoted: promote it with "
        "`inferline export promote N --gate-throughput F`)",
    )
    tu.set_defaults(func=_tune)
    return parser


def cpu_instances(cores: int | None = None) -> tuple[int, ...]:
    """Instance counts worth trying for CPU instances: 1 and the powers of two up to the cores, at most 4 values."""
    cores = max(1, cores if cores is not None else (os.cpu_count() or 1))
    counts = [1 << k for k in range(cores.bit_length()) if 1 << k <= cores]
    return tuple(counts[:4])


def _space(args: argparse.Namespace) -> dict[str, tuple[object, ...]]:
    """The search space from --instances, --queue-delays-us and --preferred."""
    try:
        instances = tuple(int(x) for x in args.instances.split(",")) if args.instances else cpu_instances()
        delays = tuple(int(x) for x in args.queue_delays_us.split(","))
        preferred = tuple(
            () if c.strip() == "none" else tuple(int(b) for b in c.split(",")) for c in args.preferred.split(";")
        )
    except ValueError as exc:
        raise UserError(
            f"--instances {args.instances!r}, --queue-delays-us {args.queue_delays_us!r}, --preferred "
            f"{args.preferred!r}: {exc}; expected integers, e.g. --instances 1,2 --preferred 'none;4,8'"
        ) from exc
    if any(n < 1 for n in instances) or any(d < 0 for d in delays) or any(b < 1 for c in preferred for b in c):
        raise UserError("instance counts and batch sizes must be at least 1, queue delays at least 0")
    return {"instances": instances, "max_queue_delay_us": delays, "preferred_batch_size": preferred}


def _tune(args: argparse.Namespace) -> int:
    from inferline.benchmarks.pipeline_tune import tune, write_tune
    from inferline.export.candidate import release_candidate
    from inferline.export.publish import publish

    repository = Path(args.repository)
    result = tune(
        repository,
        args.pipeline,
        args.p99_budget_ms,
        version=args.release,
        concurrency=args.concurrency,
        duration_s=args.duration,
        max_passes=args.passes,
        gain_pairs=args.gain_pairs,
        warmup_s=args.warmup,
        space=_space(args),
        progress=lambda line: print(line, file=sys.stderr),
    )
    write_tune(result, Path(args.out))
    print(result.markdown())
    if args.publish and result.chosen is not None:
        from inferline.export.gate import release_payloads

        rows = release_payloads(repository, args.pipeline, result.version)
        candidate, manifest = release_candidate(repository, args.pipeline, result.version, rows.frame)
        rows.close()
        published = publish(
            None,
            repository,
            target="gpu" if manifest.target == "gpu" else "local",
            promote=False,
            max_batch_size=manifest.max_batch_size,
            tensorrt="tensorrt" in json.dumps(manifest.configs),
            candidate=candidate,
            serving=result.chosen,
        )
        print(
            f"published release {published.version} with {result.chosen} (not current: `inferline export promote "
            f"{published.version} --gate-throughput 0.9` measures it against the current release first)"
        )
    print(f"written to {args.out}/ (tune.json, tune.md, tune.png)")
    return 0


SUITE_ONLY = ("only", "reps", "no_grpc")  # the suite's own options, which --pipeline refuses


def _pipeline_options(run: argparse.ArgumentParser) -> tuple[str, ...]:
    """The options of `run --pipeline`; returns those that apply to it only (refused without it)."""
    g = run.add_argument_group(
        "one published pipeline (--pipeline)",
        "Measure one pipeline on a running server instead of the suite: a load sweep, step by step, with Triton's "
        "server-side split per step. The server is the one `inferline serve up --workdir` recorded, or --url.",
    )
    before = {a.dest for a in run._actions}
    g.add_argument(
        "--pipeline",
        default=None,
        help="the served pipeline (a name, or a dotted module pkg.mod): measure it instead of running the suite",
    )
    g.add_argument(
        "--url",
        default=None,
        help="HOST:PORT to load (default: the edge of the server recorded in --workdir for --protocol, or "
        "Triton's own port with --direct)",
    )
    g.add_argument("--protocol", choices=["http", "grpc"], default="http", help="the protocol to send requests in")
    g.add_argument("--workdir", type=new_dir, default=".inferline", help="the server record of `inferline serve up`")
    g.add_argument(
        "--direct", action="store_true", help="load Triton's own port from the server record instead of its edge"
    )
    g.add_argument(
        "--triton-http",
        default=None,
        metavar="HOST:PORT",
        help="Triton's own HTTP port for its statistics API (default: the server record's; the edge refuses it)",
    )
    g.add_argument(
        "--repository",
        default=None,
        help="the model repository: the release's spec snapshot and training run (default: the server record's)",
    )
    g.add_argument("--data", type=existing_file, default=None, help="a Parquet file of rows to draw the payloads from")
    g.add_argument(
        "--holdout",
        action="store_true",
        help="draw the payloads from the holdout of the current release's training run (found under --runs)",
    )
    g.add_argument("--runs", default=".inferline/runs", help="where the training runs are (for --holdout)")
    g.add_argument(
        "--pool",
        type=positive_int,
        default=2000,
        help="distinct rows in the payload pool (drawn from --data or the holdout; generated otherwise)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the pool's draw, the generator and the arrivals")
    g.add_argument("--rows-per-request", type=positive_int, default=1, help="rows in each request")
    g.add_argument(
        "--encoding",
        choices=["binary", "json"],
        default="binary",
        help="HTTP bodies: the binary tensor extension, or all JSON (as the project suite sends)",
    )
    g.add_argument(
        "--concurrency",
        default=None,
        metavar="LIST",
        help="closed-loop steps, requests in flight, e.g. 1,4,16 (default: 1,4,16 unless --rate is given)",
    )
    g.add_argument(
        "--rate",
        default=None,
        metavar="LIST",
        help="open-loop steps, requests per second sent on schedule whatever the answers do, e.g. 100,200",
    )
    g.add_argument(
        "--warmup", type=non_negative_float, default=1.0, help="seconds of load before the first step (not recorded)"
    )
    g.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "asyncio"],
        default="auto",
        help="auto: wrk for closed-loop HTTP steps, the asyncio generator for gRPC and open-loop steps",
    )
    g.add_argument(
        "--arrivals",
        choices=["poisson", "uniform"],
        default="poisson",
        help="open loop: Poisson arrivals (seeded) or evenly spaced",
    )
    g.add_argument(
        "--max-inflight",
        type=positive_int,
        default=1024,
        help="open loop: requests in flight at most; an arrival beyond is counted as dropped, not sent",
    )
    g.add_argument("--timeout", type=positive_float, default=10.0, help="seconds before a request counts as timeout")
    g.add_argument(
        "--api-key-file",
        type=existing_file,
        default=None,
        help="a file holding the caller key the edge wants (serve up --api-keys); never the key itself",
    )
    g.add_argument("--tls-ca", type=existing_file, default=None, help="PEM CA of an edge that serves TLS")
    g.add_argument("--tls-cert", type=existing_file, default=None, help="PEM client certificate (mutual TLS)")
    g.add_argument("--tls-key", type=existing_file, default=None, help="PEM private key of --tls-cert")
    g.add_argument(
        "--compare",
        type=existing_file,
        default=None,
        metavar="PREVIOUS.json",
        help="an earlier results.json of `bench run --pipeline`: one ratio line per step both measured",
    )
    return tuple(a.dest for a in run._actions if a.dest not in before and a.dest != "pipeline")


def _run(args: argparse.Namespace) -> int:
    defaults = args.option_defaults
    given = [d for d in args.pipeline_only if getattr(args, d) != defaults[d]]
    if args.pipeline:
        suite = [d for d in SUITE_ONLY if getattr(args, d) != defaults[d]]
        if suite:
            raise UserError(
                f"{', '.join('--' + d.replace('_', '-') for d in suite)} belong to the project suite, not to "
                "--pipeline; drop them (--duration, --quick and --out apply to both)"
            )
        from inferline.benchmarks.pipeline_bench import run_pipeline_command

        return run_pipeline_command(args)
    if given:
        raise UserError(
            f"{', '.join('--' + d.replace('_', '-') for d in given)} apply to one pipeline: add --pipeline P, or "
            "drop them to run the project suite"
        )
    args.out = args.out or "benchmarks/results"
    # imported here, not at module level: Dask's spawned workers re-import this module (multiprocessing's
    # __mp_main__), and the suite would cost each of them torch, tritonclient and matplotlib imports
    from inferline.benchmarks.report import markdown
    from inferline.benchmarks.suite import Settings, run_suite

    settings = Settings.for_mode(args.quick)
    if args.reps:
        settings.reps = args.reps
    if args.duration:
        settings.duration_s = args.duration
    settings.grpc = not args.no_grpc
    results = run_suite(settings, Path(args.out), args.only)  # WrkMissing (a UserError): one line, exit 1
    print(markdown(results))
    print(f"written to {args.out}/ (results.json, results.md, {', '.join(results['plots'])})")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
