"""inferline export [publish|promote|rollback|history]: gate, publish and move releases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inferline.core.alerts import Alert, Alerter
from inferline.core.command import (
    Parser,
    existing_dir,
    existing_file,
    new_dir,
    new_file,
    positive_float,
    positive_int,
    run,
)
from inferline.core.errors import UserError, user_message
from inferline.export.candidate import model_candidate
from inferline.export.parity import ATOL, RTOL, ParityGateFailed
from inferline.export.publish import publish
from inferline.export.quality import QualityGateRefused
from inferline.features.dataset import expand_paths
from inferline.features.spec import PipelineSpec, load_pipeline, read_spec
from inferline.release.registry import Registry, RegistryError, choose_published
from inferline.release.switch import set_current


def _spec(value: str) -> PipelineSpec:
    """``--spec``: a spec snapshot (a ``spec.json`` written by training or publish) or a pipeline module."""
    if value.endswith(".json"):
        return read_spec(Path(value))
    return load_pipeline(value)


def _publish(args: argparse.Namespace) -> int:
    from inferline.training.train import latest_run

    candidate = None
    run_dir: Path | None = None
    onnx = Path(args.onnx) if args.onnx else None
    if args.module or args.spec:  # a model trained elsewhere
        if not args.spec:
            raise UserError("--module needs --spec: the pipeline spec (a module name or a spec.json) it serves")
        if args.run:
            raise UserError("--run publishes a training run; --module/--spec publish a model trained elsewhere")
        candidate = model_candidate(
            _spec(args.spec),
            module=args.module,
            checkpoint=Path(args.checkpoint) if args.checkpoint else None,
            onnx_model=onnx,
            data=expand_paths(args.data) if args.data else (),
            threshold=args.threshold,
        )
        onnx = None
        source = args.module or str(args.onnx)
    else:
        run_dir = Path(args.run) if args.run else latest_run(Path(args.runs))
        source = str(run_dir)
    try:
        result = publish(
            run_dir,
            Path(args.repository),
            target=args.target,
            promote=not args.no_promote and args.gate_throughput is None,
            onnx_model=onnx,
            tensorrt=args.tensorrt,
            candidate=candidate,
            load_check=not args.no_load_check,
            atol=args.parity_atol,
            rtol=args.parity_rtol,
            quality_tolerance=args.quality_tolerance,
            accept_worse=args.accept_worse,
            refuse_worse=not args.no_promote,  # the speed gate promotes after publish: refuse here already
        )
    except ParityGateFailed as exc:
        current = Registry(Path(args.repository), exc.pipeline).current
        stays = f"release {current} stays current" if current is not None else "no release was current; none is now"
        Alerter.from_env(Path(args.alerts)).emit(
            Alert(
                source="export",
                reason="parity_gate_failed",
                severity="critical",
                message=f"the parity gate refused {source}; {stays}",
                details={
                    "run": source,
                    "max_abs_error": exc.report.max_abs_error,
                    "max_rel_error": exc.report.max_rel_error,
                    "atol": exc.report.atol,
                    "rtol": exc.report.rtol,
                    "outside_tolerance": exc.report.outside_tolerance,
                    "class_mismatches": exc.report.class_mismatches,
                    "current_release": current,
                },
            )
        )
        print(f"export FAILED: {user_message(exc)}", file=sys.stderr)
        print(json.dumps(exc.report.as_dict(), indent=2), file=sys.stderr)
        return 1
    except QualityGateRefused as exc:
        _quality_alert(Path(args.alerts), exc, source)
        raise  # one line, exit 1 (UserError)
    if result.quality is not None:
        print(result.quality.summary(), file=sys.stderr)
    promoted = result.promoted
    if args.gate_throughput is not None and not args.no_promote:
        pipeline = result.manifest.pipeline
        _speed_gate(Path(args.repository), pipeline, result.version, args)  # refused: published, not current
        set_current(Path(args.repository), pipeline, result.version, "promote", reason="publish (speed gate passed)")
        promoted = True
    p = result.parity
    print(
        json.dumps(
            {
                "release": f"{result.manifest.pipeline}:{result.version}",
                "promoted": promoted,
                "target": args.target,
                "parity": {
                    "passed": p.passed,
                    "max_abs_error": p.max_abs_error,
                    "max_rel_error": p.max_rel_error,
                    "atol": p.atol,
                    "rtol": p.rtol,
                    "rows": p.rows,
                    "class_mismatches": p.class_mismatches,
                },
                "quality": result.manifest.quality,
                "onnx_sha256": result.manifest.onnx_sha256,
                "repository": str(args.repository),
            },
            indent=2,
        )
    )
    return 0


def _speed_gate(repository: Path, pipeline: str, version: int, args: argparse.Namespace) -> None:
    """``--gate-throughput``: measure ``version`` against the current release (``export.gate``); raise
    ``GateRefused`` when it is slower than the gate allows. Nothing to compare with: passes."""
    from inferline.export.gate import GateRefused, measure_gate

    current = Registry(repository, pipeline).read()["current"]
    if current is None or current == version:
        return
    report = measure_gate(
        repository,
        pipeline,
        candidate=version,
        current=current,
        min_ratio=args.gate_throughput,
        p99_budget_ms=args.gate_p99_ms,
        concurrency=args.gate_concurrency,
        duration_s=args.gate_duration,
        reps=args.gate_reps,
    )
    if not report.passed:
        raise GateRefused(
            f"release {version} not promoted: {'; '.join(report.reasons())}. Release {current} stays current; "
            "measure both with `inferline bench run --pipeline`, fix what slows it, and publish again",
            report,
        )
    print(f"speed gate passed: {report.summary()}", file=sys.stderr)


def _quality_alert(alerts: Path, exc: QualityGateRefused, source: str) -> None:
    """A refused quality gate is alerted like a refused parity gate: the figures of both releases, per set."""
    report = exc.report
    Alerter.from_env(alerts).emit(
        Alert(
            source="export",
            reason="quality_gate_refused",
            severity="warning",
            message=f"the quality gate refused {source}: {report.figures()}; release {report.current_version} "
            "stays current",
            details={"run": source, **report.as_dict()},
        )
    )


def _move(args: argparse.Namespace) -> int:
    pipeline = choose_published(Path(args.repository), args.pipeline)
    quality = None
    if args.command == "promote":  # the quality gate first (seconds), then the speed gate (a scratch server)
        from inferline.export.quality import promotion_report

        known = Registry(Path(args.repository), pipeline).versions()
        if args.version not in known:
            raise RegistryError(f"release {pipeline}:{args.version} does not exist; published: {known}")
        try:
            quality = promotion_report(
                Path(args.repository), pipeline, args.version, args.quality_tolerance, args.accept_worse
            )
        except QualityGateRefused as exc:
            _quality_alert(Path(args.alerts), exc, f"release {pipeline}:{args.version}")
            raise
        print(quality.summary(), file=sys.stderr)
    if getattr(args, "gate_throughput", None) is not None:
        _speed_gate(Path(args.repository), pipeline, args.version, args)
    reg = set_current(
        Path(args.repository),
        pipeline,
        getattr(args, "version", None),
        args.command,
        reason=args.reason,
        quality=quality,
    )
    print(
        f"{pipeline}: current {reg['current']}, previous {reg['previous']} "
        "(apply it to a running server with `inferline serve apply`, without a failed request)"
    )
    return 0


def _history(args: argparse.Namespace) -> int:
    pipeline = choose_published(Path(args.repository), args.pipeline)
    reg = Registry(Path(args.repository), pipeline).read()
    if args.json:
        print(json.dumps(reg, indent=2))
        return 0
    print(f"{pipeline}: current {reg['current']}, previous {reg['previous']}")
    for v, r in sorted(reg["releases"].items(), key=lambda kv: int(kv[0])):
        m = r.get("metrics", {})
        quality = (r.get("quality") or {}).get("status", "-")  # the quality gate's verdict at publish
        figures = " ".join(f"{k}={m[k]:.4f}" for k in ("roc_auc", "macro_f1", "rmse") if k in m)
        print(f"  release {v}: {r['published_at']} target={r['target']} {figures} quality={quality}")
    for h in reg["history"]:
        print(f"  {h['at']} {h['action']:<8} -> {h['version']} by {h.get('user', '?')}: {h.get('reason', '')}")
    return 0


def _gate_flags(parser: argparse.ArgumentParser) -> None:
    """The quality gate's (``export.quality``) and the speed gate's (``export.gate``) flags, for ``publish`` and
    ``promote``."""
    parser.add_argument(
        "--quality-tolerance",
        type=float,
        default=None,
        help="quality gate: how much worse than the current release a candidate may score on the same rows: "
        "absolute for ROC AUC (binary) and macro F1 (multi-class), relative for RMSE (regression) "
        "(default: 0.01 for ROC AUC and F1, 0.02 for RMSE)",
    )
    parser.add_argument(
        "--accept-worse",
        metavar="REASON",
        default=None,
        help="make the release current although the quality gate found it worse; the reason and both figures "
        "go into the registry's history",
    )
    parser.add_argument(
        "--gate-throughput",
        type=positive_float,
        default=None,
        help="promote only if the release's throughput is at least this fraction of the current one's, "
        "measured side by side on a scratch server (export.gate); e.g. 0.9",
    )
    parser.add_argument(
        "--gate-p99-ms", type=positive_float, default=None, help="and only if its p99 is within this budget"
    )
    parser.add_argument(
        "--gate-concurrency",
        type=positive_int,
        default=16,
        help="the gate's reference load: requests in flight",
    )
    parser.add_argument(
        "--gate-duration", type=positive_float, default=4.0, help="seconds per measured step of the gate"
    )
    parser.add_argument(
        "--gate-reps", type=positive_int, default=3, help="interleaved pairs of steps (current, candidate)"
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--repository", type=new_dir, default="triton_models", help="the Triton model repository releases live in"
    )
    pipeline = Parser(add_help=False)
    pipeline.add_argument(
        "--pipeline", default=None, help="pipeline whose registry to use (default: the repository's only pipeline)"
    )
    parser = Parser(prog=prog or "inferline export", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "publish", parents=[common], help="export the latest (or given) run, gate it, publish and promote it"
    )
    p.add_argument("--run", type=existing_dir, help="training run directory (default: the LATEST run in --runs)")
    p.add_argument("--runs", default=".inferline/runs", help="directory of training runs, for its LATEST run")
    p.add_argument(
        "--target",
        choices=["local", "gpu"],
        default="local",
        help="local: one fused Python-backend model on KIND_CPU (bundled server); gpu: an ensemble, native onnxruntime",
    )
    p.add_argument("--tensorrt", action="store_true", help="gpu target: enable the TensorRT accelerator")
    p.add_argument(
        "--onnx",
        type=existing_file,
        help="publish this ONNX file instead of exporting: with --run it is gated against the run's checkpoint; "
        "with --spec (no run) its first output is taken as the logits (values for regression), inferline's head is "
        "attached, and it is gated on batch-size invariance and finite outputs",
    )
    p.add_argument(
        "--module",
        help="publish a model trained elsewhere: its factory as pkg.mod:build (called with the spec's model layout "
        "and factory_args; see inferline.training.model), with --checkpoint and --spec; gated against that module",
    )
    p.add_argument("--checkpoint", type=existing_file, help="--module's weights: torch.save(module.state_dict(), path)")
    p.add_argument("--spec", help="the pipeline spec of --module or --onnx: a pipeline module name, or a spec.json")
    p.add_argument(
        "--data",
        nargs="+",
        help="with --spec: Parquet files of raw rows, the gate's examples and the data tabular features are "
        "fitted on (default: examples drawn from the spec's tensor declarations)",
    )
    p.add_argument(
        "--threshold", type=float, default=0.5, help="with --spec, binary tasks: the decision threshold (P(class 1))"
    )
    p.add_argument(
        "--no-load-check",
        action="store_true",
        help="skip loading the release in a scratch tritonserver before it is promoted (local target)",
    )
    p.add_argument(
        "--parity-atol",
        type=positive_float,
        default=ATOL,
        help="parity gate: absolute tolerance; an output passes when |onnx - reference| <= atol + rtol*|reference|",
    )
    p.add_argument(
        "--parity-rtol",
        type=positive_float,
        default=RTOL,
        help="parity gate: relative tolerance (numpy allclose semantics, with --parity-atol)",
    )
    p.add_argument("--no-promote", action="store_true", help="publish without making it current")
    _gate_flags(p)
    p.add_argument("--alerts", type=new_file, default=".inferline/alerts.jsonl", help="JSON-lines alert log")
    p.set_defaults(func=_publish)
    for name, helptext in (
        ("promote", "make a published release current"),
        ("rollback", "return to the previous release"),
    ):
        s = sub.add_parser(name, parents=[common, pipeline], help=helptext)
        if name == "promote":
            s.add_argument("version", type=positive_int, help="the published release to make current")
            s.add_argument("--alerts", type=new_file, default=".inferline/alerts.jsonl", help="JSON-lines alert log")
            _gate_flags(s)
        s.add_argument("--reason", default="manual", help="why, for the audit history")
        s.set_defaults(func=_move)
    h = sub.add_parser("history", parents=[common, pipeline], help="releases and the audit history")
    h.add_argument("--json", action="store_true", help="print the registry as JSON")
    h.set_defaults(func=_history)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # bare `inferline export` publishes the latest run
        args = ["publish"]
    return run(parser, args)


if __name__ == "__main__":
    sys.exit(main())
