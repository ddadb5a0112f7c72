"""``inferline rollout shadow|canary|status|abort``: progressive delivery of a published release on the running server.

``canary N`` and ``shadow N`` load release N beside the current one on the server started with ``inferline serve up
--workdir W`` (``release.switch.load_beside``), warm it with real inferences, and write the rollout
(``release.rollout``); the edge routes by it at once, and the monitor running for that server (``inferline monitor
run --workdir W``) decides every step and promotes or rolls back by itself (``monitor.rollout``). By default the
command then follows the rollout until it is decided (exit 0: promoted or the shadow passed; 1: rolled back);
``--no-wait`` returns once traffic moves. ``status`` shows the step, the share, each release's figures and the
evidence of every decision; ``abort`` sends everything back to the current release and unloads the candidate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from inferline.core.command import Parser, positive_float, positive_int, run
from inferline.core.options import add_options, from_args
from inferline.monitor.rollout_decision import Policy
from inferline.release.registry import choose_published
from inferline.release.rollout import (
    ROUTED_PHASES,
    TERMINAL_PHASES,
    Rollout,
    RolloutError,
    read_rollout,
    wait_for_ack,
    write_rollout,
)

__all__ = ["build_parser", "main", "parse_shares"]

DEFAULT_STEPS = "5,25,50"
ACK_TIMEOUT_S = 10.0


def parse_shares(text: str) -> list[float]:
    """``5,25,50`` or ``5%,25%,50%`` or ``0.05,0.25,0.5``: the candidate's share per step, increasing, each in (0, 1);
    a trailing 100 % is the promotion that follows the last step, not a step (nothing is left to compare with)."""
    try:
        values = [float(part) for part in text.replace("%", " ").replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected shares such as 5,25,50 (percent)") from exc
    # percent or fractions for the whole list: 1,5,50 is 1 %, 5 %, 50 % (not 100 %, then 5 % and 50 %)
    percent = "%" in text or any(v > 1 for v in values)
    shares = [v / 100.0 if percent else v for v in values]
    if shares and shares[-1] == 1.0:
        shares.pop()
    if not shares or any(not 0 < s < 1 for s in shares) or shares != sorted(set(shares)):
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected increasing shares between 0 and 100 %, e.g. 5,25,50 (the candidate is promoted "
            "to 100 % after the last step passes)"
        )
    return shares


def parse_share(text: str) -> float:
    """One share: ``5%``, ``5`` (percent) or ``0.05``."""
    shares = parse_shares(text)
    if len(shares) != 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected one share, e.g. 5% or 0.05")
    return shares[0]


def _server(workdir: Path) -> dict[str, Any]:
    from inferline.serving.server import NoServer
    from inferline.serving.status import read_record

    record = read_record(workdir)
    if not record or not record.get("http"):
        raise NoServer(
            f"no server runs from {workdir}: start one with `inferline serve up --workdir {workdir}`, or pass its "
            "--workdir"
        )
    return record


def _policy(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    policy = from_args(Policy, args, steps=steps)  # Policy checks every field's range
    return {k: getattr(policy, k) for k in policy.__dataclass_fields__}


def _warm(url: str, repository: Path, pipeline: str, version: int, times: int = 3) -> None:
    """Real inferences on release ``version`` before any caller's request reaches it (its first ones pay for
    loading onnxruntime's arenas and the contract's caches)."""
    from inferline.core.http import request
    from inferline.features.spec import read_spec
    from inferline.release.registry import Registry
    from inferline.serving.probe import probe_body

    spec = read_spec(Registry(repository, pipeline).release_files(version)["spec"])
    body = probe_body(spec)
    for _ in range(times):
        request(
            f"{url}/v2/models/{pipeline}/versions/{version}/infer",
            body,
            headers={"Content-Type": "application/json"},
            timeout_s=30.0,
        )


def _refuse_worse(release: dict[str, Any], pipeline: str, version: int, accept_worse: str | None) -> None:
    """A canary ends in the candidate's promotion, which ``inferline export promote`` refuses for a release the
    quality gate found worse; so does the canary, unless ``--accept-worse`` gives a reason. Its own checks compare
    the two releases' answers, not their accuracy (a regression's, not at all), so they cannot stand in for it."""
    quality = release.get("quality") or {}
    if quality.get("status") != "worse":
        return
    if accept_worse is not None and not accept_worse.strip():
        raise RolloutError('--accept-worse needs a reason for the audit history, e.g. --accept-worse "fewer features"')
    if accept_worse is not None:
        return
    metric = quality.get("metric")
    figures = "; ".join(
        f"{metric} on {name} ({s.get('rows')} rows): {s.get('candidate'):.4g} against {s.get('current'):.4g}"
        for name, s in (quality.get("sets") or {}).items()
    )
    raise RolloutError(
        f"release {pipeline}:{version} is worse than release {quality.get('against')} by the quality gate of its "
        f"publish ({figures}), and a canary ends in its promotion; the canary's checks compare the releases' answers, "
        "not their accuracy. Compare it without promoting it (`inferline rollout shadow`), or roll it out on purpose "
        'with --accept-worse "reason" (recorded in the registry\'s history)'
    )


def _start(args: argparse.Namespace) -> int:
    from inferline.core.secrets import admin_key
    from inferline.release.registry import Registry
    from inferline.release.switch import load_beside

    workdir = Path(args.workdir)
    record = _server(workdir)
    repository = Path(args.repository or record["repository"])
    pipeline = choose_published(repository, args.pipeline)
    existing = read_rollout(repository, pipeline)
    if existing is not None and existing.phase in ROUTED_PHASES:
        raise RolloutError(
            f"rollout {existing.id} of {pipeline}:{existing.candidate} is {existing.phase}; wait for it, or stop it "
            "with `inferline rollout abort`"
        )
    registry = Registry(repository, pipeline)
    if args.version not in registry.versions():
        raise RolloutError(f"release {pipeline}:{args.version} is not published; published: {registry.versions()}")
    if args.version == registry.current:
        raise RolloutError(f"release {pipeline}:{args.version} is already current; name a newer release")
    if args.mode == "canary":
        _refuse_worse(registry.read()["releases"][str(args.version)], pipeline, args.version, args.accept_worse)
    shares = args.steps if args.mode == "canary" else [args.share]
    policy = _policy(args, len(shares))
    address = str(record["http"])  # host:port, as tritonclient takes it
    key = admin_key(workdir)
    current = registry.current
    if current is None:
        raise RolloutError(f"{pipeline} has no current release to compare with; promote one first")
    # the edge addresses every request to the current release by version before a second version is loaded
    rollout = write_rollout(
        repository, Rollout(pipeline, args.mode, current, args.version, shares, args.sticky_header, policy)
    )
    if not wait_for_ack(repository, rollout, ACK_TIMEOUT_S):
        print(f"warning: no edge acknowledged the rollout within {ACK_TIMEOUT_S:g} s; is one running?", file=sys.stderr)
    try:
        served = load_beside(address, key, repository, pipeline, args.version)
        if served != current:
            raise RolloutError(
                f"the server serves {pipeline}:{served}, the registry says {pipeline}:{current} is current: restart "
                "it (`inferline serve down`, then `up`) before a rollout"
            )
        _warm(f"http://{address}", repository, pipeline, args.version)
    except Exception as exc:
        rollout.phase, rollout.reason, rollout.decided_at = "aborted", f"not started: {exc}", time.time()
        write_rollout(repository, rollout)
        raise
    rollout.phase, rollout.step_started_at = "running", time.time()
    write_rollout(repository, rollout)
    with registry.locked() as reg:
        Registry.record(
            reg, "rollout_start", args.version, rollout=rollout.id, mode=args.mode, current=current,
            shares=shares, sticky_header=args.sticky_header, policy=policy, accept_worse=args.accept_worse,
        )  # fmt: skip
    steps = " -> ".join(f"{s:.0%}" for s in shares)
    what = f"copies {shares[0]:.0%} of requests to" if args.mode == "shadow" else f"routes {steps} of requests to"
    print(
        f"rollout {rollout.id}: {pipeline}:{args.version} loaded and warmed beside {pipeline}:{current}; the edge "
        f"{what} it. The monitor of this server (`inferline monitor run --workdir {workdir}`) decides each step "
        f"after {policy['min_rows']} rows per release (false-alarm rate {policy['alpha']:.0%} over the rollout).",
        flush=True,
    )
    if args.no_wait:
        return 0
    return _follow(repository, pipeline, rollout.id, args.timeout)


def _follow(repository: Path, pipeline: str, rollout_id: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    seen: tuple[str, int] | None = None
    while True:
        r = read_rollout(repository, pipeline)
        if r is None or r.id != rollout_id:
            print(f"rollout {rollout_id} was replaced", file=sys.stderr)
            return 1
        if (r.phase, r.step) != seen:
            seen = (r.phase, r.step)
            print(_line(r), flush=True)
        if r.phase in TERMINAL_PHASES:
            return 0 if r.phase in ("promoted", "passed") else 1
        if time.monotonic() > deadline:
            print(
                f"rollout {rollout_id} still {r.phase} after {timeout_s:g} s (it goes on; `inferline rollout "
                "status` follows it)",
                file=sys.stderr,
            )
            return 2
        time.sleep(1.0)  # a person reads these lines: once a second is enough


def _line(r: Rollout) -> str:
    head = f"rollout {r.id} ({r.mode}) {r.pipeline}:{r.current} -> {r.pipeline}:{r.candidate}: {r.phase}"
    if r.phase == "running":
        return f"{head}, step {r.step + 1}/{len(r.shares)} at {r.share:.0%}"
    return f"{head}{': ' + r.reason if r.reason else ''}"


def _status(args: argparse.Namespace) -> int:
    from inferline.monitor.rollout import evidence_path

    repository = Path(args.repository or _server(Path(args.workdir))["repository"])
    pipeline = choose_published(repository, args.pipeline)
    r = read_rollout(repository, pipeline)
    if r is None:
        print(f"{pipeline} has had no rollout")
        return 0
    try:
        evidence = json.loads(evidence_path(repository, pipeline).read_text())
    except (OSError, ValueError):
        evidence = None
    if args.json:
        print(json.dumps({"rollout": r.as_dict(), "evidence": evidence}, indent=2))
        return 0
    print(_line(r))
    if r.phase == "running" and evidence and evidence.get("rollout") == r.id and evidence.get("step") == r.step:
        counts = ", ".join(f"{k}: {v['rows']} rows / {v['requests']} requests" for k, v in evidence["counts"].items())
        print(f"  this step so far: {counts} (decided at {r.policy.get('min_rows')} rows each)")
        if evidence.get("waiting_for"):
            print(f"  waiting for: {evidence['waiting_for']}")
    for d in r.decisions:
        print(f"  step {d['step'] + 1} at {d['share']:.0%}: {d['verdict']} (alpha {d['alpha']:.4f})")
        for c in d["checks"]:
            if c["status"] != "not_applicable":
                print(f"    {c['name']:<18} {c['status']:<16} {c['message']}")
    return 0


def _abort(args: argparse.Namespace) -> int:
    from inferline.core.alerts import Alerter
    from inferline.core.secrets import admin_key
    from inferline.monitor.rollout import RolloutController

    workdir = Path(args.workdir)
    record = _server(workdir)
    repository = Path(args.repository or record["repository"])
    pipeline = choose_published(repository, args.pipeline)
    r = read_rollout(repository, pipeline)
    if r is None or r.phase not in ROUTED_PHASES:
        print(f"{pipeline} has no rollout to abort" + (f" (the last one is {r.phase})" if r else ""))
        return 0
    controller = RolloutController(
        repository, pipeline, str(record["http"]), admin_key(workdir), Alerter.from_env(None), "binary"
    )
    controller.abort(r, reason=args.reason)
    print(_line(r))
    return 0


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    top = Parser(prog=prog or "inferline rollout", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = top.add_subparsers(dest="command", required=True)
    common = Parser(add_help=False)
    common.add_argument("--workdir", default=".inferline", help="the work directory of `inferline serve up`")
    common.add_argument("--repository", help="the model repository (default: the server's)")
    common.add_argument("--pipeline", help="the pipeline (default: the only one published)")
    for mode, helptext in (
        ("canary", "route a growing share of requests to release N; promote or roll back by the evidence"),
        ("shadow", "copy a share of requests to release N off the request path; compare, never answer with it"),
    ):
        s = sub.add_parser(mode, parents=[common], help=helptext)
        s.add_argument("version", type=positive_int, help="the published release to roll out")
        if mode == "canary":
            s.add_argument(
                "--steps", type=parse_shares, default=parse_shares(DEFAULT_STEPS),
                help="the candidate's share of requests per step, in percent; promotion to 100 %% follows the last",
            )  # fmt: skip
            s.add_argument(
                "--accept-worse",
                metavar="REASON",
                help="roll out a release the quality gate found worse when it was published (refused without it: a "
                "canary ends in promotion); the reason goes into the registry's history",
            )
            s.add_argument(
                "--sticky-header",
                help="a request header (gRPC: metadata key) whose value keeps a caller on one release (hashed); "
                "without it each request is drawn at random",
            )
        else:
            s.add_argument("--share", type=parse_share, default=0.05, help="the share of requests copied: 5%% or 0.05")
            s.set_defaults(sticky_header=None, accept_worse=None)
        add_options(s, Policy)  # the decision's policy: its fields are the flags (monitor.rollout_decision)
        s.add_argument("--no-wait", action="store_true", help="return once traffic moves (the monitor decides)")
        s.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds to follow the rollout")
        s.set_defaults(func=_start, mode=mode)
    st = sub.add_parser("status", parents=[common], help="the step, the share and the evidence of each decision")
    st.add_argument("--json", action="store_true", help="the rollout and its evidence as JSON")
    st.set_defaults(func=_status)
    ab = sub.add_parser(
        "abort", parents=[common], help="send every request to the current release; unload the candidate"
    )
    ab.add_argument("--reason", default="aborted by the operator", help="recorded in the registry's audit entry")
    ab.set_defaults(func=_abort)
    return top


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
