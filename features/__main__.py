"""inferline generate|validate"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inferline.features.artifacts import atomic_write_parquet
from inferline.features.dataset import InvalidShareExceeded, expand_paths, load_validated
from inferline.features.spec import load_pipeline_module
from inferline.features.synthetic import apply_shifts, parse_shift
from inferline.features.validation import FileLevelError


def _generate(args: argparse.Namespace) -> int:
    module = load_pipeline_module(args.pipeline)
    out = Path(args.out)
    per_file = -(-args.rows // args.files)
    written = 0
    for i in range(args.files):
        n = min(per_file, args.rows - written)
        if n <= 0:
            break
        frame = module.generate(n, seed=args.seed * 1000 + i)
        if args.shift:
            frame = apply_shifts(frame, module.SPEC, [parse_shift(t) for t in args.shift], seed=args.seed * 1000 + i)
        path = out / f"{args.pipeline}-{i:04d}.parquet"
        atomic_write_parquet(path, frame)
        written += n
        label = module.SPEC.label
        print(f"wrote {path} ({n} rows, {frame[label].mean():.2%} positive {label})")
    return 0


def _validate(args: argparse.Namespace) -> int:
    spec = load_pipeline_module(args.pipeline).SPEC
    try:
        paths = expand_paths(args.files)
        _, report = load_validated(
            paths,
            spec,
            quarantine_dir=Path(args.quarantine) if args.quarantine else None,
            include_label=not args.no_label,
            max_invalid_share=args.max_invalid_share,
        )
    except (FileLevelError, InvalidShareExceeded, FileNotFoundError) as exc:
        print(f"validation FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for f in report.files:
            print(f"{f['file']}: {f['rows_in']} rows, {f['rows_valid']} valid, {f['rows_quarantined']} quarantined")
            for reason, count in f["reasons"].items():
                print(f"    {reason}: {count}")
            for note in f["normalizations"]:
                print(
                    f"    normalized {note['column']}: {note['action']} ({note['rows']} rows"
                    + (f", offsets {note['offsets']}" if note.get("offsets") else "")
                    + (f", from {note['from']}" if note.get("from") else "")
                    + ")"
                )
            for sample in f["samples"]:
                print(f"    e.g. {sample['row_id']}: {sample['reasons']}")
        print(f"total: {report.rows_in} in = {report.rows_valid} valid + {report.rows_quarantined} quarantined")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "inferline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a seeded synthetic upstream data set as Parquet")
    g.add_argument("--pipeline", default="fraud")
    g.add_argument("--rows", type=int, default=200_000)
    g.add_argument("--files", type=int, default=4, help="number of Parquet files (partitions)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default=".inferline/data/raw")
    g.add_argument(
        "--shift",
        action="append",
        default=[],
        help="a drifted upstream: COLUMN=xFACTOR, COLUMN=+DELTA or COLUMN=VALUE:SHARE (repeatable)",
    )
    g.set_defaults(func=_generate)
    v = sub.add_parser("validate", help="validate data files against the pipeline's schema; quarantine bad rows")
    v.add_argument("files", nargs="+", help="Parquet/CSV files, globs or directories")
    v.add_argument("--pipeline", default="fraud")
    v.add_argument("--quarantine", default=None, help="directory for <file>.quarantine.parquet")
    v.add_argument("--max-invalid-share", type=float, default=0.05)
    v.add_argument("--no-label", action="store_true", help="data without the label column (scoring input)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_validate)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
