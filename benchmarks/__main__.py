"""inferline bench run [--quick]: the benchmark suite, results in benchmarks/results/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inferline.command import Parser, new_dir, positive_float, positive_int, run

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
    run = sub.add_parser("run", help="run the suite; never run it beside other work (the figures become noise)")
    run.add_argument("--quick", action="store_true", help="shorter runs (about 5 minutes on 2 cores)")
    run.add_argument("--out", type=new_dir, default="benchmarks/results", help="directory for results and plots")
    run.add_argument(
        "--only",
        type=_parts,
        default="all",
        help=f"comma-separated subset of the parts ({', '.join(PARTS)}), or all",
    )
    run.add_argument("--reps", type=positive_int, default=None, help="interleaved repetitions (default: 3)")
    run.add_argument(
        "--duration", type=positive_float, default=None, help="seconds per load run (default: 10; 4 with --quick)"
    )
    run.add_argument("--no-grpc", action="store_true", help="skip the gRPC load runs")
    run.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
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
