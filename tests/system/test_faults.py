"""Serving under faults (SECURITY.md cases 5, 7 and 8), against a server started as users start it
(``inferline serve up``: supervisor, validating gateway, tritonserver): malformed requests, the one request that
aborts Triton 2.51, overload, deadlines and cancellation, SIGKILL and SIGINT. Nothing accepted is lost."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inferline.features.pipelines import fraud
from inferline.serving.client import Cancelled, DeadlineExceeded, InferlineClient, encode_rows

from .conftest import Published, Supervised, gone, group_of, reaped, supervised_server

ROWS = fraud.generate(600, seed=11).drop(columns=[fraud.SPEC.label])
HUGE = [1_000_000_000, 1_000_000_000]


@pytest.fixture(scope="module")
def served(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    """The shared server; its hang probe is off: these tests count the served model's inferences exactly, and each
    probe is one more (the probe has its own tests, on servers of their own)."""
    server = supervised_server(
        published,
        tmp_path_factory.mktemp("faults"),
        *("--max-inflight", "1", "--max-queued", "1", "--probe-interval", "0"),
    )
    try:
        yield server
    finally:
        server.stop()


LIMITS = ("--max-inflight", "1", "--max-queued", "1")


@pytest.fixture
def server(published: Published, tmp_path: Path) -> Iterator[Supervised]:
    """A server of the test's own (the module server's limits), for the tests that crash, kill or stop it: they
    never disturb the shared one, and one failure cascades into nothing."""
    server = supervised_server(published, tmp_path, *LIMITS)
    try:
        yield server
    finally:
        server.stop()


def oip_body(rows: Any = None) -> dict[str, Any]:
    """A JSON inference request (one tensor per raw column) as any HTTP client would write it."""
    arrays = encode_rows(ROWS.head(2) if rows is None else rows, fraud.SPEC)
    inputs = []
    for column in fraud.SPEC.input_columns:
        values = arrays[column.name].reshape(-1)
        data = [v.decode() for v in values] if column.triton_dtype == "BYTES" else values.tolist()
        inputs.append({"name": column.name, "shape": [len(values), 1], "datatype": column.triton_dtype, "data": data})
    return {"inputs": inputs}


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(f"http://{url}/v2/models/fraud/infer", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def forwarded(server: Supervised) -> float:
    return server.metrics().get('inferline_gateway_forwarded_requests_total{route="infer"}', 0.0)


def served_rows(server: Supervised) -> float:
    """Rows the served model (the fused ``fraud``, version = the release) executed, by its own counter: proves each
    row was inferred exactly once."""
    return server.metrics(server.record["metrics"])['nv_inference_count{model="fraud",version="2"}']


def still_serves(server: Supervised) -> None:
    for url in (server.record["gateway"], server.record["http"]):
        with InferlineClient(url, "http", pipeline="fraud") as client:
            p = client.predict(ROWS.head(4))
        assert p.ok.all() and set(p.release) == {"fraud:2"}


def traffic(served: Supervised) -> tuple[threading.Thread, list[Any]]:
    """A caller scoring ROWS in requests of 50 through the gateway (retrying while the server is down), started."""
    results: list[Any] = []

    def score() -> None:
        with InferlineClient(
            served.record["gateway"], "http", pipeline="fraud", timeout_s=90, retries=60, backoff_max_s=1
        ) as c:
            results.extend(c.predict(ROWS.iloc[i : i + 50]) for i in range(0, len(ROWS), 50))

    caller = threading.Thread(target=score)
    caller.start()
    return caller, results


def _with(body: dict[str, Any], name: str, **change: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    for tensor in copy["inputs"]:
        if tensor["name"] == name:
            tensor.update(change)
    return copy


GOOD = oip_body()
BINARY = json.loads(json.dumps(GOOD))  # amount as 2 binary FP64 (16 bytes) of which the body carries 8
BINARY["inputs"][[t["name"] for t in GOOD["inputs"]].index("amount")] = {
    "name": "amount",
    "shape": [2, 1],
    "datatype": "FP64",
    "parameters": {"binary_data_size": 16},
}
BINARY_HEADER = json.dumps(BINARY).encode()
MALFORMED = {
    "shape_data_mismatch": (json.dumps(_with(GOOD, "amount", shape=[3, 1])).encode(), {}, 400, "holds 2"),
    "huge_shape": (json.dumps(_with(GOOD, "amount", shape=HUGE)).encode(), {}, 400, "the limit is"),
    "wrong_datatype": (json.dumps(_with(GOOD, "amount", data=["x", "y"])).encode(), {}, 400, "FP64 but holds"),
    "unknown_datatype": (json.dumps(_with(GOOD, "amount", datatype="FP128")).encode(), {}, 400, "expected one of"),
    "invalid_json": (b'{"inputs": [', {}, 400, "not valid JSON"),
    "not_an_object": (b"[1, 2]", {}, 400, "must be a JSON object"),
    "header_length_lies": (json.dumps(GOOD).encode(), {"Inference-Header-Content-Length": "999999"}, 400, "at most"),
    "binary_size_lies": (
        BINARY_HEADER + b"\0" * 8,
        {"Inference-Header-Content-Length": str(len(BINARY_HEADER))},
        400,
        "only 8 remain",
    ),
    "over_the_size_limit": (b"{" + b" " * (2 * 1024 * 1024) + b"}", {}, 413, "the limit is"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_are_refused_at_the_edge(served: Supervised, case: str) -> None:
    body, headers, status, phrase = MALFORMED[case]
    before = forwarded(served)
    code, text, _ = post(served.record["gateway"], body, headers)
    assert code == status and phrase in json.loads(text)["error"], text
    assert forwarded(served) == before, "a refused request never reaches Triton"
    still_serves(served)


@pytest.mark.parametrize(
    ("case", "status"),
    [("missing_input", 400), ("extra_input", 400)],
)
def test_requests_triton_refuses_itself_pass_through_with_its_status(
    served: Supervised, case: str, status: int
) -> None:
    body = json.loads(json.dumps(GOOD))
    if case == "missing_input":
        body["inputs"] = body["inputs"][1:]
    else:
        body["inputs"].append({"name": "surprise", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]})
    for url in (served.record["gateway"], served.record["http"]):
        code, text, _ = post(url, json.dumps(body).encode())
        assert code == status and "input" in json.loads(text)["error"], text
    still_serves(served)


BARE_TRITON_2_51 = {  # measured: what the bundled server answers when nothing stands in front of it
    "shape_data_mismatch": (500, "Shape does not match"),
    "wrong_datatype": (500, "non-number as double"),
    "invalid_json": (500, "failed to parse the request JSON"),
    "not_an_object": (500, "non-existing object member 'inputs'"),
    "unknown_datatype": (400, "invalid datatype"),
    "header_length_lies": (400, "inference header size should be in range"),
    "binary_size_lies": (400, "unexpected size for input 'amount'"),
}


@pytest.mark.parametrize("case", sorted(BARE_TRITON_2_51))
def test_what_bare_triton_2_51_answers(served: Supervised, case: str) -> None:
    """The upstream behaviours SECURITY.md documents (the gateway answers all of them with 400)."""
    body, headers, *_ = MALFORMED[case]
    code, text, _ = post(served.record["http"], body, headers)
    assert (code, BARE_TRITON_2_51[case][1] in text) == (BARE_TRITON_2_51[case][0], True), text
    still_serves(served)


def _long_rows() -> Any:
    """256 valid rows whose descriptions (19 KB each, over the 10,000-character limit) make a body of 4.6 MiB."""
    rows = ROWS.head(256).copy()
    rows["description"] = [f"{i:05d}" + "x" * 19_000 for i in range(256)]
    return rows


CRASHES = {  # one unauthenticated HTTP request that takes the bundled Triton 2.51 down (measured)
    "huge_shape": (json.dumps(_with(GOOD, "amount", shape=HUGE, data=[1.0])).encode(), "signal SIGABRT", "bad_alloc"),
    "valid_json_4.6MiB": (json.dumps(oip_body(_long_rows())).encode(), "signal SIGSEGV", ""),
}


def test_bare_triton_2_51_answers_binary_bodies_of_4_mib_and_more(served: Supervised) -> None:
    """The body-size crash is a JSON one: the same 4.6 MiB of rows in the binary tensor extension (a small JSON
    header, the tensors after it) is answered by Triton's own port, each over-long description with its reason,
    where the same rows as JSON take it down (CRASHES). The edge refuses both with 413, its limit being 2 MiB."""
    from inferline.serving.client import RequestRefused

    rows = _long_rows()
    pid = served.state()["pid"]
    with InferlineClient(served.record["http"], "http", pipeline="fraud", max_batch_size=256) as client:
        predictions = client.predict(rows)
    assert len(predictions) == 256 and all(s.startswith("description:") for s in predictions.status)
    assert served.state()["pid"] == pid
    with InferlineClient(served.record["gateway"], "http", pipeline="fraud", max_batch_size=256, retries=0) as edge:
        with pytest.raises(RequestRefused, match=r"413|limit"):
            edge.predict(rows)
    still_serves(served)


def test_grpc_is_not_affected_by_either_crash(served: Supervised) -> None:
    """Measured: 2.51's gRPC endpoint checks declared shapes before allocating and takes large messages."""
    pid = served.state()["pid"]
    client = grpcclient.InferenceServerClient(served.record["grpc"])
    inputs = InferlineClient(served.record["grpc"], "grpc", pipeline="fraud")._inputs(
        encode_rows(ROWS.head(1), fraud.SPEC)
    )
    assert client.infer("fraud", inputs, request_id="x" * (8 * 1024 * 1024)).as_numpy("status")[0, 0] == b"ok"
    for tensor in inputs:
        tensor._input.ClearField("shape")
        tensor._input.shape.extend(HUGE)
    with pytest.raises(InferenceServerException, match="batch-size must be <= 256") as refused:
        client.infer("fraud", inputs)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and served.state()["pid"] == pid
    client.close()
    still_serves(served)


@pytest.mark.parametrize("crash", sorted(CRASHES))
def test_one_request_that_kills_triton_is_survived_and_nothing_accepted_is_lost(server: Supervised, crash: str) -> None:
    body, cause, log_line = CRASHES[crash]
    state = server.state()
    killed_pid, restarts = state["pid"], state["restarts"]

    caller, results = traffic(server)
    with pytest.raises((ConnectionError, urllib.error.URLError)):  # the server dies mid-request
        post(server.record["http"], body)
    server.wait_until(lambda: server.state()["restarts"] == restarts + 1, 120, "the supervisor's restart")
    caller.join(120)
    # nothing accepted was lost: every row answered exactly once, by the same release
    assert sum(len(p) for p in results) == len(ROWS) and all(p.ok.all() for p in results)
    assert {r for p in results for r in p.release} == {"fraud:2"}
    state = server.state()
    assert state["state"] == "ready" and state["pid"] != killed_pid
    assert state["last_crash"]["cause"] == cause
    assert any(log_line in line for line in state["last_crash"]["log_tail"])
    metrics = server.metrics()
    assert metrics[f'inferline_server_restarts_total{{cause="{cause}"}}'] == 1
    assert metrics["inferline_server_restart_seconds"] < 60  # the bound SECURITY.md documents
    # the supervisor marks itself ready first and raises the info alert after (its sinks may be slow): wait on it
    server.wait_until(
        lambda: {"server_crashed", "server_restarted"} <= {a["reason"] for a in serving_alerts(server)},
        30,
        "the server_crashed and server_restarted alerts",
    )
    status = server.cli("status")
    assert status.returncode == 0, status.stdout
    loaded = {(m["name"], m["version"]) for m in json.loads(status.stdout)["loaded"]}
    assert ("fraud", "2") in loaded and ("fraud", "1") not in loaded  # the same release, not another one
    still_serves(server)


def serving_alerts(server: Supervised) -> list[dict[str, Any]]:
    """The alerts the supervisor wrote so far (alerts.jsonl, one JSON object per line)."""
    path = server.workdir / "alerts.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []  # the last piece: "" or a line being written
    return [a for a in map(json.loads, lines) if a["source"] == "serving"]


def test_a_burst_over_the_limit_is_rejected_fast_and_retries_lose_nothing(served: Supervised) -> None:
    body = json.dumps(oip_body(ROWS.head(256))).encode()
    start = threading.Barrier(32)
    answers: list[Any] = []
    before = forwarded(served)

    def burst() -> None:
        start.wait()
        try:
            answers.append(post(served.record["gateway"], body))
        except Exception as exc:  # noqa: BLE001 - kept for the assertion message
            answers.append((exc, "", {}))

    threads = [threading.Thread(target=burst) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    rejected = [a for a in answers if a[0] == 503]
    assert len(answers) == 32 and {a[0] for a in answers} <= {200, 503} and rejected, answers
    assert all("overloaded" in json.loads(a[1])["error"] and a[2]["Retry-After"] == "1" for a in rejected)
    assert forwarded(served) - before == 32 - len(rejected), "rejected requests never reached Triton"

    # callers with the client library: retries with backoff; every row ends answered once or recorded as failed
    rows_before = served_rows(served)
    outcomes: list[Any] = []

    def caller(seed: int) -> None:
        with InferlineClient(
            served.record["gateway"], "http", pipeline="fraud", timeout_s=30, retries=4, backoff_s=0.02
        ) as c:
            outcomes.append(c.predict(fraud.generate(1024, seed=seed).drop(columns=["is_fraud"]), errors="record"))

    threads = [threading.Thread(target=caller, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 8 and all(len(p) == 1024 for p in outcomes)
    answered = sum(int((~p.failed).sum()) for p in outcomes)
    failed = sum(int(p.failed.sum()) for p in outcomes)
    assert answered + failed == 8 * 1024
    for p in outcomes:  # a failed row has a reason and no prediction; an answered one a finite prediction
        assert np.isnan(p.probabilities[p.failed]).all() and (p.predicted_class[p.failed] == -1).all()
        assert np.isfinite(p.probabilities[~p.failed]).all()
        assert all(s == "failed:unavailable" for s, f in zip(p.status, p.failed, strict=True) if f)
    served.wait_until(lambda: served_rows(served) - rows_before >= answered, 10, "the server's counters")
    assert served_rows(served) - rows_before == answered, "no row was inferred twice"


def test_cancellation_is_typed_and_sends_nothing_more(served: Supervised) -> None:
    rows = fraud.generate(256 * 6, seed=5).drop(columns=["is_fraud"])
    before = served_rows(served)
    cancel = threading.Event()
    with InferlineClient(served.record["grpc"], "grpc", pipeline="fraud") as client:
        with pytest.raises(Cancelled) as stopped:
            client.predict(rows, cancel=cancel, progress=lambda done: cancel.set())
    assert stopped.value.done_rows == 256
    # exactly the one request answered before the cancel ran on the server; nothing after it, nothing twice
    served.wait_until(lambda: served_rows(served) - before >= 256, 10, "the server's counters")
    assert served_rows(served) - before == 256
    still_serves(served)


def test_a_passed_deadline_is_typed_and_never_retried(served: Supervised) -> None:
    rows = fraud.generate(256, seed=6).drop(columns=["is_fraud"])
    for url, protocol in ((served.record["grpc"], "grpc"), (served.record["gateway"], "http")):
        sent = forwarded(served)
        with InferlineClient(url, protocol, pipeline="fraud", timeout_s=0.001) as client:  # type: ignore[arg-type]
            with pytest.raises(DeadlineExceeded) as late:
                client.predict(rows)
        assert late.value.attempts == 1 and not late.value.retryable
        assert forwarded(served) - sent <= (1 if protocol == "http" else 0), "sent at most once"
    still_serves(served)


def test_sigkill_mid_traffic_then_restart_brings_the_same_versions(server: Supervised) -> None:
    state = server.state()
    caller, results = traffic(server)
    server.wait_until(lambda: forwarded(server) > 0 and len(results) > 0, 60, "traffic flowing")
    group, regions = group_of(state["pid"])
    stubs = [p for p in group if p != state["pid"]]
    assert stubs and regions, (group, regions)
    for stub in stubs:  # a stub that cannot leave by itself, as one that outlived a SIGFPE crash
        os.kill(stub, signal.SIGSTOP)
    os.kill(state["pid"], signal.SIGKILL)  # tritonserver only: the supervisor restarts it
    server.wait_until(lambda: server.state()["restarts"] == state["restarts"] + 1, 120, "the restart")
    assert reaped(group, regions), "a process of the killed server's group, or its shared memory, outlived it"
    caller.join(120)
    assert sum(len(p) for p in results) == len(ROWS) and all(p.ok.all() for p in results)
    assert server.state()["last_crash"]["cause"] == "signal SIGKILL"

    # the whole service killed (supervisor and server): reported down; `up` brings back the same versions
    supervisor = state["supervisor_pid"]
    os.kill(supervisor, signal.SIGKILL)
    server.wait_until(lambda: gone(supervisor), 10, "the killed supervisor gone")
    status = server.cli("status")  # down, or down (stopping) while the orphaned tritonserver still drains
    assert status.returncode == 3, status.stdout
    assert status.stdout.startswith(
        (f"down: pid {supervisor} is gone", f"down (stopping): supervisor pid {supervisor} is gone")
    ), status.stdout
    restarted = server.state()["pid"]  # tritonserver follows its supervisor (PR_SET_PDEATHSIG), draining first
    server.wait_until(lambda: gone(restarted), 30, "tritonserver exiting after its supervisor")
    server.up()
    loaded = {(m["name"], m["version"]) for m in server.record["loaded"]}
    assert ("fraud", "2") in loaded and ("fraud", "1") not in loaded
    with InferlineClient(server.record["gateway"], "http", pipeline="fraud", timeout_s=30) as client:
        assert client.predict(ROWS).ok.all()


def test_sigint_drains_in_flight_requests_within_the_exit_timeout(server: Supervised) -> None:
    body = json.dumps(oip_body(ROWS.head(256))).encode()
    outcomes: list[str] = []

    def caller() -> None:  # sends until the port closes
        for _ in range(5000):
            try:
                code, text, _ = post(server.record["gateway"], body)
                outcomes.append("ok" if code == 200 else f"{code}:{json.loads(text)['error']}")
            except (ConnectionError, urllib.error.URLError) as exc:
                outcomes.append(f"refused:{exc}")
                return

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    server.wait_until(
        lambda: server.metrics().get("inferline_gateway_inflight_requests", 0) > 0, 60, "a request in flight"
    )
    supervisor = server.state()["supervisor_pid"]
    ok_before = outcomes.count("ok")
    os.kill(supervisor, signal.SIGINT)
    server.wait_until(lambda: gone(supervisor), 10 + 5, "the drain within the exit timeout (10 s) and a margin")
    for t in threads:
        t.join(60)
    # in flight at the signal: answered; after it, a clear 503 while draining, then the port is closed
    assert outcomes.count("ok") > ok_before
    assert {o.split(":")[0] for o in outcomes} <= {"ok", "503", "refused"}, outcomes
    assert all("shutting down" in o or "overloaded" in o for o in outcomes if o.startswith("503")), outcomes
    assert server.cli("status").returncode == 3


@pytest.fixture
def roomy(published: Published, tmp_path: Path) -> Iterator[Supervised]:
    """A server of the test's own with the edge's default limits: both of the hung test's callers are in flight on
    Triton at once (with the module's one slot, the second would wait in the edge's queue instead)."""
    server = supervised_server(published, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_a_hung_server_is_found_by_its_probe_killed_and_restarted(roomy: Supervised) -> None:
    """tritonserver stopped (SIGSTOP): alive, answering nothing. The hang probe (one real inference per pipeline
    every second, 2 s timeout, 2 failures in a row) finds it within seconds; the edge answers 503 at once from then
    on, the whole group is killed and the server restarted (cause `hung`, a critical alert). A caller through the
    HTTP edge waiting on the hung server gets 503 well within the edge's upstream timeout (10 s), and a gRPC caller
    without a deadline gets UNAVAILABLE; both are served again after the restart."""
    import time

    server = roomy

    import grpc

    state = server.state()
    assert state["probes"] == {"fraud": "inference"}
    group, regions = group_of(state["pid"])
    edge, body = server.record["gateway"], json.dumps(GOOD).encode()
    got: dict[str, Any] = {}

    def http_caller() -> None:
        started = time.monotonic()
        code, text, _ = post(edge, body)
        got["http"] = (code, time.monotonic() - started, text)

    def grpc_caller() -> None:
        client = grpcclient.InferenceServerClient(server.record["grpc_edge"])
        inputs = InferlineClient(server.record["grpc_edge"], "grpc", pipeline="fraud")._inputs(
            encode_rows(ROWS.head(1), fraud.SPEC)
        )
        started = time.monotonic()
        try:
            client.infer("fraud", inputs)  # no deadline
            got["grpc"] = ("OK", time.monotonic() - started)
        except InferenceServerException as exc:
            got["grpc"] = (exc.status(), time.monotonic() - started)
        client.close()

    stopped = time.monotonic()
    os.kill(state["pid"], signal.SIGSTOP)
    callers = [threading.Thread(target=http_caller), threading.Thread(target=grpc_caller)]
    for t in callers:
        t.start()
    server.wait_until(lambda: gone(state["pid"]), 30, "the hung server killed")
    detected = time.monotonic() - stopped
    later = time.monotonic()
    code, text, _ = post(edge, body)  # the edge knows at once: no wait for the upstream timeout
    during = (code, time.monotonic() - later, json.loads(text).get("error", ""))
    server.wait_until(lambda: server.state()["restarts"] == state["restarts"] + 1, 120, "the restart")
    restarted = time.monotonic() - stopped
    for t in callers:
        t.join(30)
    print(
        f"\nSIGSTOP figures: detected and killed {detected:.2f}s, restarted and ready {restarted:.2f}s; HTTP caller "
        f"in flight: {got['http'][0]} after {got['http'][1]:.2f}s; gRPC caller without a deadline: {got['grpc'][0]} "
        f"after {got['grpc'][1]:.2f}s; an HTTP caller after detection: {during[0]} in {during[1] * 1000:.0f} ms"
    )
    assert detected < 10, detected
    assert got["http"][0] == 503 and got["http"][1] < 10, got["http"]
    assert got["grpc"][0] == str(grpc.StatusCode.UNAVAILABLE) and got["grpc"][1] < 10, got["grpc"]
    assert during[0] == 503 and during[1] < 1 and "restarting" in during[2], during
    assert reaped(group, regions)
    after = server.state()
    assert after["state"] == "ready" and after["last_crash"]["cause"].startswith("hung: 2 probe inferences")
    assert server.metrics()['inferline_server_restarts_total{cause="hung"}'] == 1
    alerts = [json.loads(x) for x in (server.workdir / "alerts.jsonl").read_text().splitlines()]
    assert "server_hung" in {a["reason"] for a in alerts if a["severity"] == "critical"}
    still_serves(server)


def test_past_the_restart_budget_it_keeps_restarting_degraded_with_one_alert(
    published: Published, tmp_path: Path
) -> None:
    """With a budget of no restart (`--max-restarts 0` on a server of its own), each crash is past it: the service
    is `degraded` (`serve status` says why) but restarted, with backoff; the critical alert is raised once for
    the episode, not once per crash. A stop afterwards leaves no stub behind (before, the first crash stopped the
    service for good)."""
    server = supervised_server(published, tmp_path, *LIMITS, "--max-restarts", "0")
    try:
        _degraded_but_serving(server)
    finally:
        server.stop()


def _degraded_but_serving(server: Supervised) -> None:
    for n in (1, 2):
        state = server.state()
        os.kill(state["pid"], signal.SIGKILL)
        server.wait_until(
            lambda n=n: server.state()["restarts"] == n and server.state()["up"], 120, f"restart {n} past the budget"
        )
    state = server.state()
    assert state["state"] == "degraded" and state["degraded"].startswith("restart budget exhausted at ")
    assert "crashed 2 times within 300s (last: signal SIGKILL" in state["degraded"]
    status = server.cli("status")
    assert status.returncode == 0 and "warning: degraded: restart budget exhausted" in status.stderr, status
    alerts = [json.loads(x)["reason"] for x in (server.workdir / "alerts.jsonl").read_text().splitlines()]
    assert alerts.count("server_restart_budget_exhausted") == 1, alerts
    assert server.metrics()["inferline_server_restart_budget_exhausted"] == 1
    still_serves(server)
    group, regions = group_of(state["pid"])
    server.stop()
    assert reaped(group, regions), "a stub or its shared memory outlived `serve down`"


def test_a_busy_server_whose_probes_time_out_is_not_killed(published: Published, tmp_path: Path) -> None:
    """A probe can wait behind slow requests (a large model on a CPU); that is not a hang. The served release's model
    sleeps 0.3 s per batch and the probe waits 0.25 s: every probe times out at the supervisor, yet Triton keeps
    finishing inferences (its metrics port shows them), so the server is never killed. (The SIGSTOP test above
    shows that a stopped one, which finishes nothing, still is.)"""
    from inferline.benchmarks.release_faults import slow_down

    server = supervised_server(published, tmp_path, "--probe-timeout", "0.25", "--probe-interval", "0.2", up=False)
    slow_down(tmp_path / "triton_models", published.releases[-1].version, sleep_s=0.3)
    server.up()
    try:
        pid = server.state()["pid"]
        slow = 'inferline_server_probes_total{outcome="slow_but_progressing"}'
        server.wait_until(lambda: server.metrics().get(slow, 0) >= 3, 60, "three slow probes seen progressing")
        metrics = server.metrics()
        assert metrics['inferline_server_probes_total{outcome="failed"}'] >= 4  # the probes did time out
        assert not any(k.startswith("inferline_server_restarts_total") and v for k, v in metrics.items()), metrics
        after = server.state()
        assert (after["state"], after["pid"], after["restarts"]) == ("ready", pid, 0)
    finally:
        server.stop()
