"""inferline generate|validate|check"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from inferline.core.command import Parser, fraction, new_dir, positive_int, run
from inferline.core.errors import user_message
from inferline.core.files import atomic_write_parquet
from inferline.features.dataset import InvalidShareExceeded, expand_paths, load_validated
from inferline.features.normalize import REASON_ADVICE
from inferline.features.spec import choose_pipeline, load_pipeline_module
from inferline.features.synthetic import Shift, ShiftError, apply_shifts, parse_shift
from inferline.features.tensors import parquet_rows
from inferline.features.validation import FileLevelError


def _pipeline(given: str | None) -> str:
    """``--pipeline``, or the only pipeline module (and say so)."""
    choice = choose_pipeline(given)
    if choice.reason:
        print(f"pipeline {choice.name!r}: {choice.reason}", file=sys.stderr)
    return choice.name


def _shift(text: str) -> Shift:
    try:
        return parse_shift(text)
    except ShiftError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _generate(args: argparse.Namespace) -> int:
    pipeline = _pipeline(args.pipeline)
    module = load_pipeline_module(pipeline)
    out = Path(args.out)
    per_file = -(-args.rows // args.files)
    written = 0
    for i in range(args.files):
        n = min(per_file, args.rows - written)
        if n <= 0:
            break
        frame = module.generate(n, seed=args.seed * 1000 + i)
        if args.shift:
            frame = apply_shifts(frame, module.SPEC, args.shift, seed=args.seed * 1000 + i)
        if module.SPEC.tensor_columns:  # rows of [3, H, W] arrays: as a Parquet list column holds them
            frame = frame.assign(**{c.name: parquet_rows(c, frame[c.name]) for c in module.SPEC.tensor_columns})
        path = out / f"{pipeline}-{i:04d}.parquet"
        atomic_write_parquet(path, frame)
        written += n
        print(f"wrote {path} ({n} rows, {_label_summary(module.SPEC, frame)})")
    return 0


def _validate(args: argparse.Namespace) -> int:
    spec = load_pipeline_module(_pipeline(args.pipeline)).SPEC
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
        print(f"validation FAILED: {user_message(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for f in report.files:
            print(f"{f['file']}: {f['rows_in']} rows, {f['rows_valid']} valid, {f['rows_quarantined']} quarantined")
            for reason, count in f["reasons"].items():
                example = f.get("examples", {}).get(reason)
                advice = REASON_ADVICE.get(reason.split(":", 1)[-1])
                detail = "; ".join(x for x in (example and f"e.g. {example}", advice) if x)
                print(f"    {reason}: {count}" + (f" ({detail})" if detail else ""))
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


def _check_name(text: str) -> str:
    """``--only``: a check's name (the check module loads only when the option is used)."""
    from inferline.features.checks import check_names

    if text not in check_names():
        raise argparse.ArgumentTypeError(f"got {text!r}; expected one of {', '.join(check_names())}")
    return text


def _check(args: argparse.Namespace) -> int:
    """Every contract check on the pipeline, one line each as it ends, then the summary; exit 1 when one failed."""
    from inferline.features.check_strategies import EXAMPLES
    from inferline.features.checks import as_pipeline, run_checks  # hypothesis loads when the checks run

    pipeline = as_pipeline(args.pipeline)  # an unknown or broken module: one line, exit 1, before any check
    print(f"checking pipeline {pipeline.name!r} ({args.pipeline})", flush=True)
    report = run_checks(
        pipeline,
        only=args.only or None,
        examples=args.examples or EXAMPLES,
        on_result=lambda result: print(result.line(), flush=True),
    )
    print(report.summary())
    return 0 if report.passed else 1


def _label_summary(spec: Any, frame: Any) -> str:
    """The label's distribution in a line: the positive share, the share of each class, or the target's mean."""
    label = frame[spec.label]
    if spec.task == "binary":
        return f"{label.mean():.2%} positive {spec.label}"
    if spec.task == "multiclass":
        shares = label.value_counts(normalize=True).sort_index()
        return ", ".join(
            f"{spec.classes[int(k)]} {v:.1%}" for k, v in shares.items() if 0 <= int(k) < len(spec.classes)
        )
    return f"{spec.label} mean {label.mean():.4g}, std {label.std():.4g}"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog or "inferline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pipeline_help = (
        "pipeline module: a name in inferline.features.pipelines or an importable pkg.mod "
        "(default: the only pipeline module there is, if there is one)"
    )
    g = sub.add_parser("generate", help="write a seeded synthetic upstream data set as Parquet")
    g.add_argument("--pipeline", default=None, help=pipeline_help)
    g.add_argument("--rows", type=positive_int, default=200_000, help="rows in all, split across the files")
    g.add_argument("--files", type=positive_int, default=4, help="number of Parquet files (partitions)")
    g.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same rows")
    g.add_argument("--out", type=new_dir, default=".inferline/data/raw", help="directory for <pipeline>-NNNN.parquet")
    g.add_argument(
        "--shift",
        action="append",
        default=[],
        type=_shift,
        help="a drifted upstream: COLUMN=xFACTOR, COLUMN=+DELTA or COLUMN=VALUE:SHARE (repeatable)",
    )
    g.set_defaults(func=_generate)
    v = sub.add_parser("validate", help="validate data files against the pipeline's schema; quarantine bad rows")
    v.add_argument("files", nargs="+", help="Parquet/CSV files, globs or directories")
    v.add_argument("--pipeline", default=None, help=pipeline_help)
    v.add_argument(
        "--quarantine",
        type=new_dir,
        default=None,
        help="directory for each input's <stem>-<path digest>.quarantine.parquet (rows name their _source)",
    )
    v.add_argument(
        "--max-invalid-share",
        type=fraction,
        default=0.05,
        help="per file: a file whose share of invalid rows is above it refuses the input (good files beside it do "
        "not dilute it); the refused rows are kept in the quarantine",
    )
    v.add_argument("--no-label", action="store_true", help="data without the label column (scoring input)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_validate)
    c = sub.add_parser("check", help="run the contract checks on a pipeline spec; exit 1 if one fails")
    c.add_argument(
        "pipeline",
        help="pipeline module: a name in inferline.features.pipelines or an importable pkg.mod defining SPEC and "
        "generate()",
    )
    c.add_argument(
        "--only",
        action="append",
        default=[],
        type=_check_name,
        metavar="CHECK",
        help="run only this check (repeatable); a check's name is the word after passed/FAILED in the output",
    )
    c.add_argument(
        "--examples",
        type=positive_int,
        default=None,
        help="hypothesis examples per property (default: as many as the test suite runs); more find rarer "
        "disagreements and take longer",
    )
    c.set_defaults(func=_check)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
