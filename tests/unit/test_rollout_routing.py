"""Progressive delivery's routing, without a server: the edge's router (serving.edge_route) reading rollout and
registry files from a repository in tmp_path (canary split, sticky key, shadow copies, phases, acknowledgement),
the rollout file's reading and hand-off (release.rollout), and the ``inferline rollout`` command line's parsing and
errors (monitor.rollout_cli)."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inferline.monitor import rollout_cli
from inferline.monitor.rollout_cli import parse_shares
from inferline.release.rollout import (
    Rollout,
    RolloutError,
    read_ack,
    read_rollout,
    rollout_path,
    wait_for_ack,
    write_ack,
    write_rollout,
)
from inferline.serving.edge_route import Router

P = "p"


def router(repository: Path, seed: int = 0) -> Router:
    """A router on ``repository`` with its own metrics registry and a seeded draw for requests carrying no key."""
    r = Router(repository, CollectorRegistry())
    r._random = random.Random(seed).random
    return r


def canary(repository: Path, sticky_header: str | None = None, phase: str = "running") -> Rollout:
    return write_rollout(repository, Rollout(P, "canary", 2, 3, [0.1, 0.5], sticky_header, phase=phase))


def within(observed: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def candidate_share(r: Router, keys: list[str | None]) -> float:
    choices = [r.choose(P, None, key) for key in keys]
    assert all(c is not None for c in choices)
    return sum(c.candidate for c in choices if c is not None) / len(keys)


# ---- canary ----


def test_a_request_naming_a_version_goes_where_it_was_addressed(tmp_path: Path) -> None:
    canary(tmp_path)
    r = router(tmp_path)
    r.refresh()
    assert r.choose(P, None, None) is not None  # the pipeline is routed
    assert r.choose(P, "2", None) is None
    assert r.choose(P, "3", "alice") is None
    assert r.choose("other", None, None) is None  # a pipeline without a rollout


def test_random_requests_send_the_share_to_the_candidate_addressed_by_version(tmp_path: Path) -> None:
    canary(tmp_path)
    r = router(tmp_path)
    r.refresh()
    choices = [r.choose(P, None, None) for _ in range(20_000)]
    to_candidate = [c for c in choices if c is not None and c.candidate]
    assert within(len(to_candidate) / 20_000, 0.1, 20_000)
    assert {(c.version, c.release) for c in to_candidate} == {("3", "p:3")}
    rest = {(c.version, c.release, c.candidate) for c in choices if c is not None and not c.candidate}
    assert rest == {("2", "p:2", False)}  # the current release, by version too: Triton would pick the highest


def test_sample_rates_balance_both_arms(tmp_path: Path) -> None:
    """The candidate's answers are all offered; the current's at share/(1-share), so both give ~share rows."""
    canary(tmp_path)
    r = router(tmp_path)
    r.refresh()
    rates = {(c.candidate, c.sample_rate) for c in (r.choose(P, None, None) for _ in range(2_000)) if c is not None}
    assert {candidate for candidate, _ in rates} == {True, False}
    for candidate, rate in rates:
        assert rate == (1.0 if candidate else pytest.approx(0.1 / 0.9))


def test_a_sticky_key_keeps_its_release_across_calls_and_processes(tmp_path: Path) -> None:
    canary(tmp_path, sticky_header="X-User")
    first, second = router(tmp_path, seed=1), router(tmp_path, seed=2)  # another edge process: another draw
    first.refresh()
    second.refresh()
    assert first.header(P) == "x-user"  # looked up the way aiohttp and gRPC metadata compare names
    keys = [f"user-{i}" for i in range(200)]
    answers = {key: {first.choose(P, None, key) for _ in range(20)} | {second.choose(P, None, key)} for key in keys}
    assert all(len(a) == 1 for a in answers.values()), "a key changed release between calls or routers"
    routed = {next(iter(a)).candidate for a in answers.values()}  # type: ignore[union-attr]
    assert routed == {True, False}  # both releases answer some keys (200 keys at 10 %)


def test_a_sticky_split_is_monotone_across_steps(tmp_path: Path) -> None:
    rollout = canary(tmp_path, sticky_header="X-User")
    r = router(tmp_path)
    r.refresh()
    keys = [f"user-{i}" for i in range(10_000)]
    at_10 = {k for k in keys if (c := r.choose(P, None, k)) is not None and c.candidate}
    assert within(len(at_10) / len(keys), 0.1, len(keys))
    rollout.step = 1
    write_rollout(tmp_path, rollout)
    r.refresh()
    at_50 = {k for k in keys if (c := r.choose(P, None, k)) is not None and c.candidate}
    assert at_10 <= at_50, "a caller sent to the candidate at 10 % went back to the current at 50 %"
    assert within(len(at_50) / len(keys), 0.5, len(keys))


def test_the_router_acknowledges_the_generation_it_routes_by(tmp_path: Path) -> None:
    rollout = canary(tmp_path)
    r = router(tmp_path)
    assert read_ack(tmp_path, P) is None
    r.refresh()
    assert read_ack(tmp_path, P) == (rollout.id, 1)
    rollout.step = 1
    write_rollout(tmp_path, rollout)
    r.refresh()
    assert read_ack(tmp_path, P) == (rollout.id, rollout.generation) == (rollout.id, 2)


def test_a_rewrite_within_one_clock_tick_is_still_seen(tmp_path: Path) -> None:
    """Two writes with the same mtime (the kernel's coarse clock, or a fast file system) are two rollouts."""
    rollout = canary(tmp_path)
    r = router(tmp_path)
    r.refresh()
    before = os.stat(rollout_path(tmp_path, P)).st_mtime_ns
    rollout.phase = "rolling_back"
    write_rollout(tmp_path, rollout)
    os.utime(rollout_path(tmp_path, P), ns=(before, before))
    r.refresh()
    assert read_ack(tmp_path, P) == (rollout.id, 2)
    assert {c.candidate for c in (r.choose(P, None, None) for _ in range(200)) if c is not None} == {False}


@pytest.mark.parametrize(
    ("phase", "version", "candidate"),
    [("promoting", "3", True), ("rolling_back", "2", False), ("starting", "2", False)],
)
def test_promoting_and_rolling_back_send_everything_to_one_release(
    tmp_path: Path, phase: str, version: str, candidate: bool
) -> None:
    rollout = canary(tmp_path, sticky_header="X-User")
    r = router(tmp_path)
    r.refresh()
    rollout.phase = phase
    write_rollout(tmp_path, rollout)
    r.refresh()
    choices = [r.choose(P, None, f"user-{i}") for i in range(2_000)] + [r.choose(P, None, None) for _ in range(2_000)]
    assert {(c.version, c.release, c.candidate) for c in choices if c is not None} == {
        (version, f"p:{version}", candidate)
    }
    assert None not in choices  # still addressed by version: both versions are loaded


def test_a_terminal_phase_removes_the_route(tmp_path: Path) -> None:
    rollout = canary(tmp_path)
    r = router(tmp_path)
    r.refresh()
    assert r.choose(P, None, None) is not None
    rollout.phase = "rolled_back"
    write_rollout(tmp_path, rollout)
    r.refresh()
    assert r.choose(P, None, None) is None
    assert r.header(P) is None
    assert read_ack(tmp_path, P) == (rollout.id, 2)  # the monitor unloads the candidate after this


# ---- shadow ----


def test_shadow_answers_with_the_current_release_and_copies_a_share(tmp_path: Path) -> None:
    write_rollout(tmp_path, Rollout(P, "shadow", 2, 3, [0.2], phase="running"))
    r = router(tmp_path)
    r.refresh()
    choices = [r.choose(P, None, None) for _ in range(20_000)]
    assert {(c.version, c.release, c.candidate) for c in choices if c is not None} == {("2", "p:2", False)}
    shadows = [c.shadow for c in choices if c is not None]
    assert set(shadows) == {"3", None}
    assert within(shadows.count("3") / len(shadows), 0.2, len(shadows))


# ---- the registry and the metrics' release labels ----


def test_the_registry_names_the_current_release_and_only_known_releases_label_metrics(tmp_path: Path) -> None:
    registry = {"pipeline": P, "current": 2, "previous": 1, "releases": {}, "history": []}
    (tmp_path / f"{P}.registry.json").write_text(json.dumps(registry))
    r = router(tmp_path)
    r.refresh()
    assert r.current[P] == "p:2"
    assert "p:2" in r.known
    assert r.release_of(P, None) == "p:2"
    assert "p:7" not in r.known  # a caller naming version 7 adds no label set
    assert r.release_of("unknown", None) == "unknown"


def test_a_registry_that_is_not_an_object_is_skipped(tmp_path: Path) -> None:
    (tmp_path / f"{P}.registry.json").write_text("[2]")
    r = router(tmp_path)
    r.refresh()
    assert P not in r.current


# ---- files that are not what they should be ----


@pytest.mark.parametrize("text", ["{not json", "[]", json.dumps({"pipeline": P, "mode": "canary"})])
def test_a_corrupt_rollout_file_leaves_routing_unchanged(tmp_path: Path, text: str) -> None:
    rollout = canary(tmp_path, sticky_header="X-User")
    r = router(tmp_path)
    r.refresh()
    keys = [f"user-{i}" for i in range(500)]
    before = [r.choose(P, None, k) for k in keys]
    path = rollout_path(tmp_path, P)
    path.write_text(text)
    later = time.time() + 5  # a different mtime whatever the clock's resolution
    os.utime(path, (later, later))
    r.refresh()  # must not raise
    assert [r.choose(P, None, k) for k in keys] == before
    assert read_ack(tmp_path, P) == (rollout.id, 1)  # nothing new was acknowledged


def test_read_rollout_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_rollout(tmp_path, P) is None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "{}"])
def test_read_rollout_of_a_corrupt_file_says_which_and_how_to_fix(tmp_path: Path, text: str) -> None:
    path = rollout_path(tmp_path, P)
    path.write_text(text)
    with pytest.raises(RolloutError) as info:
        read_rollout(tmp_path, P)
    assert str(path) in str(info.value)
    assert "delete it" in str(info.value)


# ---- the acknowledgement ----


def test_wait_for_ack_times_out_without_an_edge_and_returns_once_one_acknowledges(tmp_path: Path) -> None:
    rollout = canary(tmp_path)
    started = time.monotonic()
    assert wait_for_ack(tmp_path, rollout, 0.2) is False
    assert time.monotonic() - started >= 0.2
    router(tmp_path).refresh()
    assert wait_for_ack(tmp_path, rollout, 0.2) is True
    write_rollout(tmp_path, rollout)  # generation 2: the edge's acknowledgement of 1 is not enough
    assert wait_for_ack(tmp_path, rollout, 0.2) is False
    write_ack(tmp_path, P, "another-rollout", rollout.generation)
    assert wait_for_ack(tmp_path, rollout, 0.2) is False


# ---- the command line ----


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        ("5,25,50", [0.05, 0.25, 0.5]),
        ("5%,25%,100%", [0.05, 0.25]),
        ("0.05,0.2", [0.05, 0.2]),
        ("1,5,50", [0.01, 0.05, 0.5]),  # 1 is 1 % when the others are percent
        ("0.5%, 10%", [0.005, 0.1]),
        ("5 25 50 100", [0.05, 0.25, 0.5]),
    ],
)
def test_parse_shares(text: str, shares: list[float]) -> None:
    assert parse_shares(text) == pytest.approx(shares)


@pytest.mark.parametrize("text", ["50,25", "0,25", "5,150", "five,25", "", "100", "5,5"])
def test_parse_shares_rejects_with_the_input_and_an_example(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_shares(text)
    assert repr(text) in str(info.value)
    assert "5,25,50" in str(info.value)


def test_canary_help_lists_every_flag_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    top = rollout_cli.build_parser()
    with pytest.raises(SystemExit) as info:
        top.parse_args(["canary", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    flat = "".join(out.split())  # help text wraps wherever the terminal width puts it
    subcommands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    actions = subcommands.choices["canary"]._actions
    flags = [s for a in actions for s in a.option_strings]
    assert {"--steps", "--sticky-header", "--workdir", "--alpha", "--no-wait", "--timeout"} <= set(flags)
    for action in actions:
        assert action.help and action.help != argparse.SUPPRESS, f"{action.option_strings or action.dest}: no help"
        for flag in action.option_strings:
            assert flag in out
        assert "".join(action.help.replace("%%", "%").split()) in flat


def test_status_without_a_server_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rollout_cli.main(["status", "--workdir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert str(tmp_path) in captured.err and "inferline serve up" in captured.err


def _worse_release_2(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose release 2 the quality gate found worse than release 1 when it was published, and the
    record of a server started from ``tmp_path / "work"`` (never reached: the refusal comes first)."""
    repository, workdir = tmp_path / "repo", tmp_path / "work"
    repository.mkdir()
    (workdir / "serving").mkdir(parents=True)
    worse = {"status": "worse", "against": 1, "metric": "rmse",
             "sets": {"holdout": {"rows": 450, "candidate": 0.5215, "current": 0.2667}}}  # fmt: skip
    registry = {"pipeline": P, "current": 1, "previous": None, "history": [],
                "releases": {"1": {"quality": {"status": "first_release"}}, "2": {"quality": worse}}}  # fmt: skip
    (repository / f"{P}.registry.json").write_text(json.dumps(registry))
    record = {"pid": os.getpid(), "http": "127.0.0.1:9", "repository": str(repository)}
    (workdir / "serving" / "server.json").write_text(json.dumps(record))
    return repository, workdir


def test_a_canary_of_a_release_the_quality_gate_found_worse_is_refused_before_traffic_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A canary ends in promotion, which `export promote` refuses for such a release; its own checks compare the
    releases' answers, not their accuracy (found following the rollouts tutorial: a regression twice as bad by RMSE
    was promoted through every step)."""
    repository, workdir = _worse_release_2(tmp_path)
    assert rollout_cli.main(["canary", "2", "--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    assert "worse than release 1" in err and "rmse on holdout (450 rows): 0.5215 against 0.2667" in err
    assert "--accept-worse" in err and "Traceback" not in err
    assert read_rollout(repository, P) is None, "nothing was routed"
    assert rollout_cli.main(["canary", "2", "--workdir", str(workdir), "--accept-worse", " "]) == 1
    assert "needs a reason" in capsys.readouterr().err
    assert read_rollout(repository, P) is None


def test_a_shadow_of_a_worse_release_is_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shadow answers nobody and promotes nothing: the way to compare a worse release."""
    repository, workdir = _worse_release_2(tmp_path)
    monkeypatch.setattr(rollout_cli, "wait_for_ack", lambda *_: True)  # no edge here to acknowledge it
    rollout_cli.main(["shadow", "2", "--workdir", str(workdir)])  # fails later: no server listens at 127.0.0.1:9
    assert "worse than release 1" not in capsys.readouterr().err
    written = read_rollout(repository, P)
    assert written is not None and written.mode == "shadow" and written.phase == "aborted"  # not started: no server
