"""The ``inferline`` command line: every option documented with its default, every command's help prints, and a
user's mistake ends in one line naming the bad value and exit status 1 (or 2 for a usage error), never a traceback.

The mistakes run as real subprocesses (``python -m inferline ...``) against real files in a temporary directory;
nothing here starts Triton, Dask or a monitor: each mistake is caught before anything would start.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferline.cli import COMMANDS, main
from inferline.core.processes import free_port
from inferline.features.pipelines import fraud
from tests.cli_cases import STAGE_MODULES, _all_parsers


def test_help_of_every_command_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    top = subprocess.run([sys.executable, "-m", "inferline", "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and all(name in top.stdout for name in COMMANDS)
    commands = [[name] for name in COMMANDS]
    for parser in _all_parsers():  # and every sub-subcommand: `inferline serve up --help`, `inferline export publish`
        words = parser.prog.split()[1:]
        if len(words) == 2:
            commands.append(words)
    assert ["serve", "up"] in commands and ["export", "publish"] in commands and ["monitor", "rules"] in commands
    for words in commands:
        with pytest.raises(SystemExit) as done:
            main([*words, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and out.startswith(f"usage: inferline {' '.join(words)}"), words


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files and directories of the kinds users get wrong."""
    root = tmp_path_factory.mktemp("cli")
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a directory\n")
    two = root / "two_pipelines"
    two.mkdir()
    for name in ("alpha", "beta"):
        registry = {"pipeline": name, "current": 1, "previous": None, "releases": {"1": {}}, "history": []}
        (two / f"{name}.registry.json").write_text(json.dumps(registry))
    (root / "broken.json").write_text("{not json")
    (root / "empty.jsonl").write_text("")
    rows = fraud.generate(2, seed=1).drop(columns=[fraud.SPEC.label])
    rows["event_time"] = rows["event_time"].map(lambda t: t.isoformat())
    rows.to_json(root / "rows.jsonl", orient="records", lines=True)
    rows.drop(columns=["amount"]).to_json(root / "no_amount.jsonl", orient="records", lines=True)
    workdir = root / "corrupt_work" / "serving"
    workdir.mkdir(parents=True)
    (workdir / "server.json").write_text("{half a record")
    return {p.name: p for p in root.iterdir()} | {"root": root}


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _mistakes(f: dict[str, Path], busy: int) -> list[tuple[list[str], int, str]]:
    """(argv after `inferline`, exit status, a text the one-line error must contain)."""
    root, missing = f["root"], str(f["root"] / "missing")
    alerts = ["--alerts", str(root / "alerts.jsonl")]
    free = [str(free_port()) for _ in range(6)]
    ports = ["--http-port", free[0], "--grpc-port", free[1], "--metrics-port", free[2], "--gateway-port", free[3]]
    ports += ["--supervisor-metrics-port", free[4], "--grpc-edge-port", free[5]]
    unreachable = f"127.0.0.1:{free_port()}"
    two, quick = str(f["two_pipelines"]), ["--timeout", "1"]
    return [
        (["nosuch"], 2, "'nosuch'"),
        (["generate", "--pipeline", "nosuch", "--out", str(root / "g")], 1, "'nosuch'"),
        (["generate", "--rows", "0"], 2, "'0'"),
        (["generate", "--shift", "amount", "--out", str(root / "g")], 2, "'amount'"),
        (["generate", "--out", str(f["a_file"])], 2, "a_file"),
        (["validate", missing], 1, missing),
        (["check", "nosuch"], 1, "'nosuch'"),
        (["check", "fraud", "--examples", "0"], 2, "'0'"),
        (["validate", str(f["empty"])], 1, str(f["empty"])),
        (["train", "--data", missing, "--runs", str(root / "runs"), "--quiet", *alerts], 1, missing),
        (["export", "publish", "--runs", str(f["empty"]), "--repository", str(root / "repo")], 1, str(f["empty"])),
        (["export", "publish", "--run", str(f["empty"]), "--repository", str(root / "repo")], 1, str(f["empty"])),
        (["export", "publish", "--run", missing], 2, missing),
        (["export", "promote", "2", "--repository", str(f["two_pipelines"])], 1, "['alpha', 'beta']"),
        (["export", "promote", "7", "--repository", str(f["two_pipelines"]), "--pipeline", "alpha"], 1, "alpha:7"),
        (["export", "rollback", "--repository", missing], 1, missing),
        (["export", "history", "--repository", str(f["two_pipelines"]), "--pipeline", "nosuch"], 1, "'nosuch'"),
        (["rollout", "status", "--workdir", str(root / "no_server")], 1, str(root / "no_server")),
        (["rollout", "status", "--repository", str(f["two_pipelines"])], 1, "['alpha', 'beta']"),
        (["rollout", "canary", "3", "--steps", "50,5"], 2, "'50,5'"),
        (["rollout", "shadow", "3", "--share", "150%"], 2, "'150%'"),
        (["export", "history", "--repository", str(f["empty"])], 1, str(f["empty"])),
        (["serve", "up", "--workdir", str(root / "w"), "--repository", missing, *ports], 1, missing),
        (["serve", "up", "--workdir", str(root / "w"), *ports, "--http-port", str(busy)], 1, f"--http-port {busy}"),
        (["serve", "up", "--workdir", str(root / "w"), *ports, "--grpc-port", free[0]], 1, f"are both {free[0]}"),
        (["serve", "status", "--workdir", str(f["a_file"])], 2, "a_file"),
        (["serve", "down", "--workdir", str(f["corrupt_work"])], 1, "server.json"),
        (["serve", "apply", "--workdir", str(f["empty"])], 1, str(f["empty"])),
        (["serve", "apply", "--workdir", str(f["empty"]), "--url", unreachable, "--repository", missing], 1, missing),
        (["serve", "predict", "--workdir", str(f["empty"]), "--file", missing], 2, missing),
        (["serve", "predict", "--workdir", str(f["empty"]), "--file", str(f["rows.jsonl"])], 1, str(f["empty"])),
        (["serve", "predict", "--file", str(f["empty.jsonl"]), "--url", unreachable], 1, "--pipeline"),
        (["serve", "predict", "--file", str(f["empty.jsonl"]), "--url", "x:1", "--pipeline", "fraud"], 1, "no rows"),
        (["serve", "predict", "--file", str(f["broken.json"]), "--url", "x:1", "--pipeline", "fraud"], 1, ".json'"),
        (
            ["serve", "predict", "--file", str(f["no_amount.jsonl"]), "--url", "x:1", "--pipeline", "fraud"],
            1,
            "rows lack column(s) ['amount']",
        ),
        (
            ["serve", "predict", "--file", str(f["rows.jsonl"]), "--url", unreachable, "--pipeline", "fraud", *quick],
            1,
            unreachable,
        ),
        (
            ["batch", "run", "--input", missing, "--output", str(root / "out"), "--repository", missing, *alerts],
            1,
            missing,
        ),
        (
            ["batch", "run", "--input", missing, "--output", str(root / "out"), *alerts, "--repository", two],
            1,
            "['alpha', 'beta']",
        ),
        (["batch", "run", "--input", missing, "--output", str(root / "out"), "--model", "a:b:c", *alerts], 2, "a:b:c"),
        (["batch", "status", "--output", missing], 1, missing),
        (["monitor", "run", "--workdir", str(f["empty"]), "--repository", missing, *alerts], 1, missing),
        (["monitor", "run", "--workdir", str(f["empty"]), "--repository", str(f["two_pipelines"])], 1, "'alpha'"),
        (["monitor", "run", "--workdir", str(f["corrupt_work"])], 1, "server.json"),
        (["monitor", "report", "--url", f"http://{unreachable}", "--out", str(root / "rep")], 1, unreachable),
        (["monitor", "rules", "--rules", str(f["broken.json"]), "--prometheus", str(root / "r.yml")], 1, "broken.json"),
        (["monitor", "rules", "--rules", missing], 2, missing),
        (["monitor", "grafana", "--out", str(f["a_file"] / "dash.json")], 2, "a_file"),
        (["bench", "run", "--only", "serving,nosuch"], 2, "'serving,nosuch'"),
        (["bench", "run", "--reps", "-1"], 2, "'-1'"),
        (["demo", "--workdir", str(f["a_file"])], 2, "a_file"),
        (["demo", "--rows", "zero"], 2, "'zero'"),
    ]


def _inferline(argv: list[str], out: Path, cwd: Path) -> None:
    """A forked process's body: `inferline ARGV` with stdout and stderr in files (an uncaught exception: its
    traceback on stderr and exit status 1, as in any process)."""
    os.chdir(cwd)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1)
    sys.exit(main(argv))


def test_mistakes_end_in_one_line_and_exit_1_or_2(files: dict[str, Path], busy_port: int) -> None:
    """Each mistake in a process of its own, forked from a fork server that imported the stage modules once
    (seconds, not minutes; never forked from this process, whose threads - gRPC, Dask clients of earlier tests -
    could hold a lock across the fork), so its exit status and its whole output are what a user would see."""
    mistakes = _mistakes(files, busy_port)
    assert set(COMMANDS) <= {argv[0] for argv, _, _ in mistakes}  # every command has mistakes below
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(STAGE_MODULES)
    failures = []

    def check(i: int, process: Any) -> None:
        argv, status, named = mistakes[i]
        process.join(120)
        if process.exitcode is None:
            process.kill()
            process.join(10)
        out = files["root"] / f"out-{i}.txt"
        output = out.read_text() if out.exists() else ""
        last = output.strip().splitlines()[-1] if output.strip() else ""
        if process.exitcode != status or "Traceback" in output or named not in last:
            failures.append(f"inferline {' '.join(argv)}: exit {process.exitcode} (expected {status}):\n{output}")

    running: list[tuple[int, Any]] = []  # as many mistakes at once as there are cores: each is its own process
    try:
        for i, (argv, _, _) in enumerate(mistakes):
            process = forkserver.Process(target=_inferline, args=(argv, files["root"] / f"out-{i}.txt", files["root"]))
            process.start()
            running.append((i, process))
            if len(running) >= (os.cpu_count() or 1):
                check(*running.pop(0))
        for started in running:
            check(*started)
    finally:
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]  # the test's own server
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(
    ("argv", "status", "named"),
    [
        (["generate", "--rows", "-5"], 2, "'-5'"),
        (["export", "history", "--repository", "no/such/repository"], 1, "'no/such/repository'"),
    ],
)
def test_the_installed_command_reports_a_mistake_in_one_line(
    argv: list[str], status: int, named: str, tmp_path: Path
) -> None:
    """The same through the installed entry point, in a fresh interpreter."""
    command = Path(sys.executable).with_name("inferline")
    done = subprocess.run([str(command), *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == status and "Traceback" not in done.stdout + done.stderr
    assert named in done.stderr.strip().splitlines()[-1]


def test_a_mistake_ends_its_one_line_with_the_docs_page_that_explains_it(tmp_path: Path) -> None:
    """The installed ``inferline``, a pipeline that does not exist: one line, exit 1, the page at its end."""
    from inferline.features.spec import PipelineNotFound

    command = Path(sys.executable).with_name("inferline")
    done = subprocess.run(
        [str(command), "check", "no_such_module"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("inferline check: error: no pipeline 'no_such_module'"), line
    assert line.endswith(f" (docs: docs/{PipelineNotFound.docs})"), line
    page = line.rpartition("(docs: ")[2].removesuffix(")").partition("#")[0]
    assert (Path(__file__).resolve().parents[2] / page).is_file(), page


def test_a_stage_runs_as_its_own_module_too() -> None:
    """``python -m inferline.serving up ...`` is the command line the detached ``up`` starts: it parses alone."""
    done = subprocess.run(
        [sys.executable, "-m", "inferline.serving", "up", "--help"], capture_output=True, text=True, timeout=120
    )
    text = " ".join(done.stdout.split())  # wrapping aside
    assert done.returncode == 0 and "--workdir WORKDIR" in text and "(default: .inferline)" in text
