"""A broken release never takes the server down (issue 15, part 6), against a real tritonserver.

``inferline serve up`` on a repository where one pipeline's current release has a config Triton refuses (an output
with ``dims: [ 0 ]``) serves the other pipeline and names the broken one with Triton's reason; with nothing
loadable it exits 1 saying why. ``check_release_loads`` passes a good release and refuses a broken one in a scratch
server that it always stops.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import psutil
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inferline.core.errors import UserError
from inferline.export.loadcheck import ReleaseUnloadable, check_release_loads
from inferline.export.publish import publish
from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient
from inferline.training.train import RunResult

from .conftest import Published, gone, supervised_server

ROWS = fraud.generate(3, seed=5).drop(columns=[fraud.SPEC.label])
REASON = "model output 'probabilities' dimension must be integer >= 1"  # Triton 2.51's own words for dims [0]


def break_dims(config: Path, name: str | None = None) -> None:
    """Rewrite ``config`` (a config.pbtxt) so output ``probabilities`` has ``dims: [ 0 ]`` (and the model is called
    ``name``), and check the result with Triton's protobuf."""
    text = config.read_text()
    if name is not None:
        text, n = re.subn(r'^name: "[^"]*"', f'name: "{name}"', text, count=1, flags=re.M)
        assert n == 1, f"no model name in {config}"
    text, n = re.subn(r'(name: "probabilities"\s+data_type: \w+\s+dims: )(\[ *\d+ *\]|\d+)', r"\g<1>[ 0 ]", text)
    assert n == 1, f"no 'probabilities' output with one dimension in {config}"
    parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert [list(o.dims) for o in parsed.output if o.name == "probabilities"] == [[0]]
    config.write_text(text)


def add_broken_pipeline(published: Published, repository: Path, name: str = "brk") -> None:
    """``name``: a copy of the published ``fraud`` pipeline (its releases, registry and data directories) whose
    current release's config declares an output of dims [0]."""
    for suffix in ("", "_preprocess", "_model"):
        shutil.copytree(published.repository / f"fraud{suffix}", repository / f"{name}{suffix}")
    registry = json.loads((published.repository / "fraud.registry.json").read_text())
    registry["pipeline"] = name
    (repository / f"{name}.registry.json").write_text(json.dumps(registry))
    current = int(registry["current"])
    break_dims(repository / name / str(current) / "release.config.pbtxt", name=name)  # what activate() serves


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``check_release_loads`` makes its temporary repository during the test (``tempfile.tempdir``)."""
    root = tmp_path / "scratch"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def left_behind(scratch: Path) -> list[str]:
    """Files and processes (tritonserver, Python-backend stubs) of a check still there: their command lines name
    the scratch repository."""
    processes = [
        " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if str(scratch) in " ".join(p.info["cmdline"] or [])
    ]
    return [str(p) for p in scratch.iterdir()] + processes


def test_serve_up_serves_the_good_pipeline_and_names_the_broken_one(published: Published, tmp_path: Path) -> None:
    repository = tmp_path / "triton_models"
    shutil.copytree(published.repository, repository)
    add_broken_pipeline(published, repository)
    server = supervised_server(published, tmp_path, "--no-trace", repository=repository)
    try:
        record = server.record
        assert record["state"] == "ready" and record["releases"] == {"brk": 2, "fraud": 2}
        assert REASON in record["unavailable"]["brk"] and "fraud" not in record["unavailable"]
        assert record["pipelines"]["fraud"]["state"] == "READY"
        assert record["pipelines"]["brk"]["state"] == "UNAVAILABLE"
        assert "'brk' (release 2) is not served" in server.up_stderr and REASON in server.up_stderr
        assert "inferline export rollback --pipeline brk" in server.up_stderr
        assert {(m["name"], m["version"]) for m in record["loaded"]} == {("fraud", "2")}

        for url in (record["http"], record["gateway"]):  # Triton's own HTTP port and the edge
            with InferlineClient(url, "http", pipeline="fraud", timeout_s=30) as client:
                answer = client.predict(ROWS)
            assert list(answer.status) == ["ok"] * 3 and set(answer.release) == {"fraud:2"}

        status = server.cli("status", timeout=60)
        assert status.returncode == 0, status.stderr
        assert REASON in json.loads(status.stdout)["unavailable"]["brk"] and REASON in status.stderr
        metrics = server.metrics()
        assert metrics['inferline_pipeline_ready{pipeline="fraud"}'] == 1.0
        assert metrics['inferline_pipeline_ready{pipeline="brk"}'] == 0.0
        assert metrics["inferline_server_up"] == 1.0 and server.state()["restarts"] == 0  # no crash, no restart
        alerts = [json.loads(line) for line in (server.workdir / "alerts.jsonl").read_text().splitlines()]
        assert [(a["reason"], a["severity"]) for a in alerts] == [("pipeline_unavailable", "warning")]
        assert REASON in alerts[0]["details"]["unavailable"]["brk"]
    finally:
        server.stop()


def test_serve_up_with_nothing_loadable_exits_1_naming_the_reason(published: Published, tmp_path: Path) -> None:
    repository = tmp_path / "triton_models"
    repository.mkdir()
    add_broken_pipeline(published, repository)
    server = supervised_server(published, tmp_path, "--no-trace", repository=repository, up=False)
    try:
        up = server.cli("up", *server.up_args)
        assert up.returncode == 1 and up.stdout == ""
        assert "no pipeline could be loaded: brk (release 2)" in up.stderr and REASON in up.stderr
        state = server.state()
        assert state["state"] == "failed" and state["restarts"] == 0 and REASON in state["failure"]
        status = server.cli("status", timeout=60)
        assert status.returncode == 3 and "no pipeline could be loaded" in status.stdout
        assert gone(state["supervisor_pid"]) and gone(state["pid"])  # it stopped: no restart loop
    finally:
        server.stop()


def fused_release(repository: Path, pipeline: str = "fraud") -> dict[str, Path]:
    """The model directories of a fused release: the served model and the data directories it reads."""
    return {name: repository / name for name in (pipeline, f"{pipeline}_preprocess", f"{pipeline}_model")}


def test_publish_into_a_relative_repository_passes_its_load_check(
    run: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``publish(run, Path("triton_models"))``, as ``inferline demo`` calls it: the load check's links to the
    staged release must not dangle (they did, relative to the scratch folder: every demo failed to publish)."""
    monkeypatch.chdir(tmp_path)
    result = publish(run.run_dir, Path("triton_models"))
    assert result.version == 1 and (tmp_path / "triton_models" / "fraud" / "1").is_dir()


def test_check_release_loads_passes_a_good_release(
    published: Published, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also when the HTTP port it picked is taken before Triton binds it (here by a socket this test listens on,
    handed out as the first 'free' port): the scratch server is started again on new ports, not reported as the
    release failing to load."""
    import socket

    import inferline.serving.server as server_module

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: next(ports, None) or real())
    try:
        report = check_release_loads(fused_release(published.repository))
    finally:
        taken.close()
    assert report.loaded == {"fraud": [2]}  # fraud_preprocess and fraud_model have no config.pbtxt: data only
    assert 0 < report.ready_s <= report.seconds < 60
    assert next(ports, None) is None, "the taken port was never handed out"
    assert left_behind(scratch) == []  # server, stub and scratch repository gone


def test_check_release_loads_refuses_a_broken_release_with_tritons_reason(
    published: Published, tmp_path: Path, scratch: Path
) -> None:
    models = fused_release(published.repository)
    models["fraud"] = tmp_path / "fraud"
    shutil.copytree(published.repository / "fraud", models["fraud"])
    break_dims(models["fraud"] / "config.pbtxt")
    with pytest.raises(ReleaseUnloadable) as raised:
        check_release_loads(models, timeout_s=60)
    assert REASON in str(raised.value) and "do not promote" in str(raised.value)
    assert raised.value.failures.keys() == {"fraud"} and REASON in raised.value.failures["fraud"]
    assert isinstance(raised.value, UserError) and isinstance(raised.value, ValueError)
    assert left_behind(scratch) == []
