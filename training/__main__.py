"""inferline train: train a pipeline's model on validated data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inferline.core.alerts import Alert, Alerter
from inferline.core.command import Parser, fraction, new_dir, new_file, positive_int, run
from inferline.core.errors import UserError, user_message
from inferline.features.dataset import BrokenFiles, InvalidShareExceeded, expand_paths, refusal_reason
from inferline.features.spec import choose_pipeline, load_pipeline
from inferline.features.validation import FileLevelError
from inferline.training.calibration import MODES
from inferline.training.train import SPLITS, train


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog or "inferline train", description=__doc__)
    parser.add_argument(
        "--pipeline",
        default=None,
        help="pipeline module: a name in inferline.features.pipelines or an importable pkg.mod "
        "(default: the only pipeline module there is, if there is one)",
    )
    parser.add_argument(
        "--data", nargs="+", default=[".inferline/data/raw"], help="Parquet files, globs or directories"
    )
    parser.add_argument("--runs", type=new_dir, default=".inferline/runs", help="directory for run directories")
    parser.add_argument("--seed", type=int, default=0, help="random seed (splits, initialization, batches)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the spec's epoch count")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="auto",
        help="train/validation/holdout split: time (needs a timestamp column), random, or stratified by class "
        "(for rows sorted by class); auto = time with a timestamp column, else stratified (random for regression)",
    )
    parser.add_argument(
        "--calibration",
        choices=MODES,
        default="auto",
        help="a classifier's calibration on the holdout (what the monitor's label-free estimates rely on): auto "
        "recalibrates it when poor (vector scaling fitted on the validation split) and refuses the run when it stays "
        "poor; off only measures and records it",
    )
    parser.add_argument(
        "--max-invalid-share",
        type=fraction,
        default=0.05,
        help="per file: a file whose share of invalid rows is above it refuses the input (good files beside it do "
        "not dilute it); the refused rows are kept in the quarantine",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch intra-op threads (results are deterministic per count)",
    )
    parser.add_argument(
        "--alerts",
        type=new_file,
        default=".inferline/alerts.jsonl",
        help="JSON-lines alert log (plus the log and the webhook in INFERLINE_ALERT_WEBHOOK)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(build_parser(prog), argv)


def _train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    choice = choose_pipeline(args.pipeline)
    if choice.reason:
        print(f"pipeline {choice.name!r}: {choice.reason}", file=sys.stderr)
    spec = load_pipeline(choice.name)
    try:
        result = train(
            expand_paths(args.data),
            spec,
            Path(args.runs),
            seed=args.seed,
            epochs=args.epochs,
            max_invalid_share=args.max_invalid_share,
            progress=not args.quiet,
            split=args.split,
            calibration=args.calibration,
        )
    except (UserError, FileNotFoundError) as exc:  # every refusal of the data or the run alerts, with its reason
        reason = refusal_reason(exc)
        last_good = Path(args.runs) / "LATEST"
        evidence = getattr(exc, "evidence", None)
        failures = Alerter.from_env(Path(args.alerts)).emit(
            Alert(
                source="training",
                reason=reason,
                severity="critical",
                message=f"training of {spec.name!r} refused ({reason}); nothing was trained or published",
                details={
                    "error": str(exc),
                    "data": list(args.data),
                    "files": _culprits(exc),
                    "evidence": str(evidence) if evidence is not None else None,
                    "last_good_run": last_good.read_text().strip() if last_good.exists() else None,
                },
            )
        )
        print(f"training FAILED, last good run kept: {user_message(exc)}", file=sys.stderr)
        if failures:
            print(f"(alert delivery failed for: {failures})", file=sys.stderr)
        return 1
    h = result.metrics["holdout"]
    print(json.dumps({"run_dir": str(result.run_dir), "seconds": round(result.seconds, 1), "holdout": h}, indent=2))
    return 0


def _culprits(exc: BaseException) -> list[str]:
    """The input files a refusal names: those over the invalid share, or those that cannot be read."""
    if isinstance(exc, InvalidShareExceeded):
        return [str(f["file"]) for f in exc.files]
    if isinstance(exc, BrokenFiles):
        return [e.source for e in exc.errors]
    if isinstance(exc, FileLevelError):
        return [exc.source]
    return []


if __name__ == "__main__":
    sys.exit(main())
