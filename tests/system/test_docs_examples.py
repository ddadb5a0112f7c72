"""The docs' examples run, and their output is what the page says (issue 33: examples that cannot rot).

The convention, for README.md and every page under docs/ (docs/reference/ is generated, so not scanned):

- Every ``bash``, ``sh``, ``console`` or ``python`` block is either run or says why not: the line right before its
  opening fence is the HTML comment ``<!-- run -->`` or ``<!-- not run: REASON -->`` (both invisible on the
  rendered page), or ``<!-- file: PATH -->``: the block shows a repository file (an example package's code), kept
  identical to it by ``docs/gen_reference.py`` (``--check`` in ``make test``). A command block with none of these
  fails ``test_every_command_block_runs_or_says_why_not``. Other blocks (``text``, ``yaml``, a diagram) are
  illustration.
- A page is a session: its ``<!-- run -->`` blocks run in page order in one fresh temporary directory, so a later
  block sees what an earlier one wrote (a tutorial's ``generate``, then ``train``, then ``export publish``). A
  server the page starts is stopped (``inferline serve down``) when the page ends, passed or failed.
- A runnable block is ``bash`` or ``python``:
  - ``bash``: run by ``bash -e -u -o pipefail`` with this repository's ``.venv/bin`` first on ``PATH``
    (``inferline`` is the installed one) and ``COLUMNS=100`` (argparse wraps help to it); it must exit 0 within
    ``TIMEOUT_S`` seconds. stdout and stderr together are its output.
  - ``python``: executed by mktestdocs (``exec_python``: a fresh ``__main__`` namespace) with the session's
    directory as the working directory; what it prints is its output. Warnings are errors, as in the rest of the
    suite.
- A runnable block must be followed (blank lines allowed between) by a ``text`` block: its expected output.
  Lines are compared one for one, trailing whitespace and leading/trailing blank lines ignored. Inside a line,
  ``...`` matches any text (timings, a run's metrics); a line that is only ``...`` matches any number of lines (a
  long help text or a JSON record shown in part).
- A page that starts a process in the background (a monitor, a Dask scheduler) stops it in a later block; should
  the page fail first, the test stops every process still running in the session's directory when the page ends.
- Ports: a page that serves uses fixed ports below Linux's ephemeral range (32768-60999), which the rest of the
  suite's free-port picks never return; where one is taken by something else, the page is skipped, saying which.

Why mktestdocs: tried beside pytest-markdown-docs on the same blocks; mktestdocs is a library this file calls, so
the file decides which blocks run and compares their output, whereas pytest-markdown-docs is a collection plugin
(``--markdown-docs``) that runs every ``python`` fence unless told ``notest``, runs no shell commands and compares
no output.

``python tests/system/test_docs_examples.py`` prints how many blocks run, per page, and the ones that do not with
their reasons.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferline.core.command import check_port_free
from inferline.core.errors import PortInUse

# exec_python is mktestdocs' Python executor (the package does not re-export it)
exec_python = pytest.importorskip(
    "mktestdocs.__main__", reason="the docs examples run through mktestdocs (pip install mktestdocs)"
).exec_python

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
MARKER = "<!-- run -->"
NOT_RUN = re.compile(r"^<!-- not run: (?P<reason>.+?) -->$")
SHOWS_FILE = re.compile(r"^<!-- file: (?P<path>\S+) -->$")
TIMEOUT_S = 240  # one block: `export publish` starts a scratch Triton, `serve up` the server
RUNNABLE_LANGS = ("bash", "python")
COMMAND_LANGS = ("bash", "sh", "shell", "console", "python", "py", "pycon")

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence
    lang: str  # the fence's first word, "" when none
    body: str
    marked: bool  # the line before the opening fence is MARKER
    not_run: str | None  # the reason given by a <!-- not run: REASON --> line before the opening fence
    shows: str | None = None  # the repository file a <!-- file: PATH --> line before the opening fence names

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "reference" not in p.relative_to(ROOT / "docs").parts)
    return [ROOT / "README.md", *docs]


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0])):
            j += 1
        body = "\n".join(line[indent:] if not line[:indent].strip() else line for line in lines[i + 1 : j])
        info = m["info"].strip()
        found.append(
            Block(
                page=str(path.relative_to(ROOT)),
                line=i + 1,
                end=j + 1,
                lang=info.split()[0].lstrip(".{").rstrip("}") if info else "",
                body=body,
                marked=i > 0 and lines[i - 1].strip() == MARKER,
                not_run=(m2["reason"] if i > 0 and (m2 := NOT_RUN.match(lines[i - 1].strip())) else None),
                shows=(m3["path"] if i > 0 and (m3 := SHOWS_FILE.match(lines[i - 1].strip())) else None),
            )
        )
        i = j + 1
    return found


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks_of(p)]


def expected_of(block: Block, blocks: list[Block], text: list[str]) -> Block | None:
    """The ```text block right after ``block`` (only blank lines between), or None."""
    after = [b for b in blocks if b.page == block.page and b.line > block.end]
    if not after or after[0].lang != "text":
        return None
    between = text[block.end : after[0].line - 1]
    return after[0] if all(not line.strip() for line in between) else None


def runnable() -> list[tuple[Block, Block | None]]:
    out = []
    for path in pages():
        blocks, text = blocks_of(path), path.read_text(encoding="utf-8").splitlines()
        out += [(b, expected_of(b, blocks, text)) for b in blocks if b.marked]
    return out


def _trimmed(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def matches(expected: str, actual: str) -> bool:
    """``actual`` is ``expected`` line for line, with ``...`` in a line matching any text and a ``...`` line any
    number of lines."""
    parts = []
    for line in _trimmed(expected):
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.fullmatch("".join(parts), "\n".join(_trimmed(actual)) + "\n", flags=re.DOTALL) is not None


def run_bash(source: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "100"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["bash", "-e", "-u", "-o", "pipefail", "-c", source],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout}"
    return proc.stdout


def run_python(source: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(cwd)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec_python(source)
    return out.getvalue()


EXAMPLES = runnable()
SESSIONS: dict[str, list[tuple[Block, Block | None]]] = {}
for _block, _expected in EXAMPLES:
    SESSIONS.setdefault(_block.page, []).append((_block, _expected))
SYSTEM_TOOLS = ("curl", "openssl", "promtool")  # Debian packages the pages run (Makefile: system-deps)
PORT_FLAG = re.compile(r"--[a-z-]*port[= ](\d+)")


def command_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in COMMAND_LANGS]


def test_the_convention_holds() -> None:
    """Every marker stands before a fenced block, a run block is runnable and has its expected output; the docs
    have some runnable examples at all."""
    problems = []
    for path in pages():
        lines = path.read_text(encoding="utf-8").splitlines()
        starts = {b.line for b in blocks_of(path)}
        for n, line in enumerate(lines, 1):
            marker = line.strip() == MARKER or NOT_RUN.match(line.strip()) or SHOWS_FILE.match(line.strip())
            if marker and (n + 1) not in starts:
                problems.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()} is not right before a fenced block")
    for block, expected in EXAMPLES:
        if block.lang not in RUNNABLE_LANGS:
            problems.append(f"{block.id}: a runnable block is one of {RUNNABLE_LANGS}, not {block.lang!r}")
        if expected is None:
            problems.append(f"{block.id}: a runnable block is followed by a ```text block of its expected output")
    assert not problems, "\n".join(problems)
    assert len(EXAMPLES) >= 4, [b.id for b, _ in EXAMPLES]


def test_every_command_block_runs_or_says_why_not() -> None:
    """A command or Python block on a page is run in CI, or the line before it says why not (a silent
    illustration would be free to rot)."""
    silent = [b.id for b in command_blocks() if not b.marked and not b.not_run and not b.shows]
    assert not silent, (
        f"{len(silent)} command blocks neither run nor say why not; put <!-- run --> (and a ```text block of the "
        f"output after it) or <!-- not run: REASON --> on the line before each: {silent}"
    )


def test_the_matcher() -> None:
    assert matches("a\nb", "a\nb  \n\n")
    assert not matches("a\nb", "a\nc")
    assert not matches("a", "a\nb")
    assert matches("passed  x (... s)\ndone", "passed  x (0.3 s)\ndone")
    assert matches("head\n...\ntail", "head\n1\n2\ntail")
    assert matches("head\n...\ntail", "head\ntail")
    assert not matches("head\n...\ntail", "head\n1\ntail\nmore")


def _ports_taken(blocks: list[tuple[Block, Block | None]]) -> list[int]:
    """The fixed ports the page's commands name (``--http-port 18400``, ...) that cannot be listened on now."""
    taken = []
    for port in sorted({int(p) for b, _ in blocks if b.lang == "bash" for p in PORT_FLAG.findall(b.body)}):
        try:
            check_port_free("--port", port)  # bound as the servers bind (SO_REUSEADDR)
        except PortInUse:
            taken.append(port)
    return taken


def _left_running(directory: Path) -> list[int]:
    """Processes still running whose working directory is the session's (or under it): what the page started in
    the background (a monitor, a Dask scheduler and its workers) and did not stop. Never this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
        except OSError:  # gone meanwhile, or another user's
            continue
        if cwd == directory or directory in cwd.parents:
            found.append(int(entry.name))
    return found


def _stop_what_the_page_started(directory: Path) -> None:
    """``inferline serve down`` for a server the page started, then SIGTERM (SIGKILL 20 s later) to every process
    the page left running in its directory (``_left_running``): a page that failed half-way leaves nothing behind
    on its fixed ports."""
    if (directory / ".inferline").is_dir():
        subprocess.run(
            [str(VENV_BIN / "inferline"), "serve", "down"], cwd=directory, capture_output=True, timeout=60, check=False
        )
    directory = directory.resolve()
    left = _left_running(directory)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _left_running(directory)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("page", list(SESSIONS))
def test_page_runs_as_written(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's run blocks, in order, in one directory: each exits 0 and prints what the ```text block after it
    says."""
    blocks = SESSIONS[page]
    tools = {t for t in SYSTEM_TOOLS for b, _ in blocks if b.lang == "bash" and re.search(rf"\b{t}\b", b.body)}
    missing = sorted(t for t in tools if shutil.which(t) is None)
    if missing:
        pytest.skip(f"{page} runs {missing}, not installed here (`make system-deps` installs them from Debian)")
    taken = _ports_taken(blocks)
    if taken:
        pytest.skip(f"{page} serves on fixed ports and {taken} are taken by another process on this machine")
    try:
        for block, expected in blocks:
            assert expected is not None, f"{block.id}: no ```text block of expected output after it"
            if block.lang == "bash":
                actual = run_bash(block.body, tmp_path)
            elif block.lang == "python":
                actual = run_python(block.body, tmp_path, monkeypatch)
            else:
                pytest.fail(f"{block.id}: cannot run a {block.lang!r} block")
            assert matches(expected.body, actual), (
                f"{block.id}: the output is not what {expected.id} says\n--- expected\n{expected.body}\n"
                f"--- actual\n{actual}"
            )
    finally:
        _stop_what_the_page_started(tmp_path)


if __name__ == "__main__":  # the count of examples CI runs, per page, and the blocks that do not run, with why
    for name, session in SESSIONS.items():
        print(f"{len(session):3d} run  {name}")
    print(f"{len(EXAMPLES):3d} run in all, on {len(SESSIONS)} pages")
    skipped = [b for b in command_blocks() if b.not_run]
    for b in skipped:
        print(f"not run  {b.id}: {b.not_run}")
    print(f"{len(skipped):3d} command blocks not run (each says why)")
    shown = [b for b in command_blocks() if b.shows]
    print(f"{len(shown):3d} blocks show a repository file (kept identical by docs/gen_reference.py)")
