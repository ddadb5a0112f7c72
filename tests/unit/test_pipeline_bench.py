"""``inferline bench run --pipeline``: short load sweeps against the session's real Triton (HTTP and gRPC) and
against a supervised server's edge. The results parse with every figure present, achieved throughput follows the
offered load where it must, Triton's per-model counts equal the requests the generator sent, failures are counted
by kind, and the comparison, markdown and PNG are written. No timing is asserted beyond generous tracking of the
offered rate (the machine is shared)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from inferline.benchmarks.__main__ import build_parser
from inferline.benchmarks.__main__ import main as bench_main
from inferline.benchmarks.pipeline_bench import _traced_server
from inferline.benchmarks.pipeline_report import compare_results
from inferline.core.command import HelpFormatter
from inferline.serving.load.target import Target


def test_a_traced_server_is_warned_about() -> None:
    """The recorded server writes request traces: the results say so (tracing costs throughput, and the bundled
    Triton 2.51 can crash under sustained traced load); another server, or an untraced one, is not warned about."""
    edge = Target("127.0.0.1:8080", "http", "fraud", "edge")
    warning = _traced_server({"trace_dir": "/w/trace", "trace_rate": 100}, edge)
    assert "1 request in 100" in warning and "--no-trace" in warning
    assert _traced_server({"trace_dir": None, "trace_rate": None}, edge) == ""
    assert _traced_server({"trace_dir": "/w/trace"}, Target("10.0.0.2:8000", "http", "fraud", "unknown")) == ""
    assert _traced_server(None, edge) == ""


def _doc(release: int | None, steps: dict[str, tuple[float, float]]) -> dict[str, Any]:
    return {
        "kind": "pipeline_bench",
        "release_number": release,
        "steps": [
            {"step": k, "throughput_rps": tp, "latency_ms": {"p99": p99}, "errors": {}}
            for k, (tp, p99) in steps.items()
        ],
    }


def test_compare_lines() -> None:
    now = _doc(3, {"c=1": (930.0, 2.0), "c=16": (1860.0, 11.0), "rate=100/s": (100.0, 3.0)})
    before = _doc(2, {"c=1": (1000.0, 2.0), "c=16": (2000.0, 10.0), "c=64": (2100.0, 40.0)})
    assert compare_results(now, before) == [
        "release 3 vs release 2: throughput x0.93 at c=1 (p99 x1.00)",
        "release 3 vs release 2: throughput x0.93 at c=16 (p99 x1.10)",
        "release 3 vs release 2: rate=100/s not measured by the previous run",
        "release 3 vs release 2: c=64 only in the previous run",
    ]
    assert compare_results(_doc(None, {"c=1": (1.0, 1.0)}), _doc(None, {"c=1": (2.0, 1.0)})) == [
        "this run vs the previous run: throughput x0.50 at c=1 (p99 x1.00)"
    ]


def test_command_line_options(capsys: pytest.CaptureFixture[str]) -> None:
    """Every option of `bench run` has help and shows its default; pipeline options need --pipeline, suite options
    are refused with it."""
    parser = build_parser("inferline bench")
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    assert run.formatter_class is HelpFormatter
    rendered = " ".join(run.format_help().split())
    for action in run._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), action.dest
        flag = isinstance(action, argparse._StoreTrueAction)
        if action.default not in (None, []) and not flag:
            assert f"(default: {action.default})" in rendered, action.dest
    assert bench_main(["run", "--rate", "10"]) == 1
    assert "--rate apply to one pipeline: add --pipeline P" in capsys.readouterr().err
    assert bench_main(["run", "--pipeline", "fraud", "--only", "serving"]) == 1
    assert "--only belong to the project suite" in capsys.readouterr().err
    assert (
        bench_main(["run", "--pipeline", "fraud", "--workdir", "/nonexistent-w", "--repository", "/nonexistent"]) == 1
    )
    assert "no --url given and no server record" in capsys.readouterr().err
