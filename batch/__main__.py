"""inferline batch run|status: score Parquet files with a published release on a Dask cluster."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from inferline.batch.job import BatchJobFailed, JobConfig, run_job
from inferline.batch.plan import EmptyInput
from inferline.core.alerts import Alert, Alerter
from inferline.core.command import Parser, new_file, run
from inferline.core.errors import UserError, user_message
from inferline.core.options import add_options, from_args
from inferline.core.secrets import monitor_key
from inferline.features.dataset import refusal_reason
from inferline.release.registry import choose_published
from inferline.release.resolve import ModelRefError, parse_model_ref


def _run(args: argparse.Namespace) -> int:
    import distributed  # noqa: F401  # imported here: dask's logging config sets the "distributed" loggers to INFO

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the local scheduler's INFO chatter drowns the report
    # --model PIPELINE[:VERSION]; without it, the current release of the repository's only pipeline
    model = args.model or choose_published(Path(args.repository), None, flag="--model")
    config = from_args(
        JobConfig,
        args,
        model=model,
        progress=not args.quiet,
        monitor_url=args.monitor,
        monitor_key=monitor_key(Path(args.workdir)) if args.monitor else None,
    )
    try:
        report = run_job(config)
    except BatchJobFailed as exc:
        print(json.dumps(exc.report.as_dict(), indent=2))
        print(f"batch FAILED: {user_message(exc)}", file=sys.stderr)
        reasons = {f.get("reason", "error") for f in exc.report.failed}  # one reason, or partitions_failed for a mix
        _alert(args, reasons.pop() if len(reasons) == 1 else "partitions_failed", str(exc), exc.report.as_dict())
        return 1
    except (UserError, FileNotFoundError) as exc:  # FileLevelError, EmptyInput, OutputInUse, RegistryError, ...
        print(f"batch REFUSED, nothing written or changed: {user_message(exc)}", file=sys.stderr)
        reason = "no_data" if isinstance(exc, EmptyInput) else refusal_reason(exc)
        _alert(args, reason, str(exc), {"input": args.inputs, "output": args.output})
        return 1
    print(json.dumps(report.as_dict(), indent=2))
    print(
        f"{report.rows_in} rows in = {report.rows_predicted} predicted + {report.rows_quarantined} quarantined "
        f"({report.partitions} partitions, {report.partitions_resumed} resumed) with {report.release['release']} "
        f"in {report.wall_s:.1f}s ({report.rows_per_s:,.0f} rows/s)",
        file=sys.stderr,
    )
    for column, found in report.duplicates.items():
        print(
            f"{found['values']} value(s) of unique column {column!r} repeat in the input: "
            f"{found['rows_quarantined']} row(s) quarantined as {column}:duplicate (policy {found['policy']}), "
            f"e.g. {found['examples']}",
            file=sys.stderr,
        )
    return 0


def _alert(args: argparse.Namespace, reason: str, message: str, details: dict[str, object]) -> None:
    failures = Alerter.from_env(Path(args.alerts)).emit(
        Alert(source="batch", reason=reason, severity="critical", message=message.splitlines()[0], details=details)
    )
    if failures:
        print(f"(alert delivery failed for: {failures})", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    root = Path(args.output)
    for name in ("_report.json", "_job.json"):
        if (root / name).exists():
            print((root / name).read_text())
            return 0
    print(f"{root} holds no batch job (no _job.json); run `inferline batch run --output {root}`", file=sys.stderr)
    return 1


def _model_ref(text: str) -> str:
    try:
        parse_model_ref(text)
    except ModelRefError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog or "inferline batch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="score input files; reruns resume, skipping committed partitions")
    add_options(run, JobConfig)  # --input, --output, --repository, --scheduler, --workers, --backend, ...
    run.add_argument(
        "--model",
        type=_model_ref,
        default=None,
        help="PIPELINE (its current release) or PIPELINE:VERSION (default: the repository's only pipeline)",
    )
    run.add_argument("--alerts", type=new_file, default=".inferline/alerts.jsonl", help="JSON-lines alert log")
    run.add_argument("--monitor", default=None, help="monitor URL (http://127.0.0.1:9400): sample rows per partition")
    run.add_argument(
        "--workdir",
        default=".inferline",
        help="the serving work directory whose monitor ingest key (monitor.key) --monitor posts with",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="print the job report of an output directory")
    status.add_argument("--output", required=True, help="the output directory of a `batch run`")
    status.set_defaults(func=_status)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
