"""inferline bench run [--quick]: the benchmark suite, results in benchmarks/results/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PARTS = ("serving", "inprocess", "features", "validation", "batch", "monitor")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    # imported here, not at module level: Dask's spawned workers re-import this module (multiprocessing's
    # __mp_main__), and the suite would cost each of them torch, tritonclient and matplotlib imports
    from inferline.benchmarks.load import WrkMissing
    from inferline.benchmarks.report import markdown
    from inferline.benchmarks.suite import Settings, run_suite

    parser = argparse.ArgumentParser(prog=prog or "inferline bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite; never run it beside other work (the figures become noise)")
    run.add_argument("--quick", action="store_true", help="shorter runs (about 5 minutes on 2 cores)")
    run.add_argument("--out", default="benchmarks/results")
    run.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    run.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3)")
    run.add_argument("--duration", type=float, default=None, help="seconds per load run")
    run.add_argument("--no-grpc", action="store_true")
    args = parser.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = only - set(PARTS)
    if unknown:
        parser.error(f"--only got {sorted(unknown)}; choose from {list(PARTS)}")
    settings = Settings.for_mode(args.quick)
    if args.reps:
        settings.reps = args.reps
    if args.duration:
        settings.duration_s = args.duration
    settings.grpc = not args.no_grpc
    try:
        results = run_suite(settings, Path(args.out), only)
    except WrkMissing as exc:
        print(f"benchmarks FAILED: {exc}", file=sys.stderr)
        return 1
    print(markdown(results))
    print(f"written to {args.out}/ (results.json, results.md, {', '.join(results['plots'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
