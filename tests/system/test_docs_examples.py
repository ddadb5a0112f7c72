"""The docs' examples run, and their output is what the page says (issue 33: examples that cannot rot).

The convention, for README.md and every page under docs/ (docs/reference/ is generated, so not scanned):

- A fenced block runs only when the line right before its opening fence is the HTML comment ``<!-- run -->``
  (invisible on the rendered page). Every other block is illustration: a diagram, a printed result, a fragment, or
  a command too expensive for a test (training, serving, ``make demo``, docker, kubectl).
- A runnable block is ````` ```bash ````` or ````` ```python `````:
  - ``bash``: run by ``bash -e -u -o pipefail`` in a fresh temporary directory, with this repository's ``.venv/bin``
    first on ``PATH`` (``inferline`` is the installed one) and ``COLUMNS=100`` (argparse wraps help to it); it must
    exit 0 within ``TIMEOUT_S`` seconds. stdout and stderr together are its output.
  - ``python``: executed by mktestdocs (``exec_python``: a fresh ``__main__`` namespace) in a fresh temporary
    working directory; what it prints is its output. Warnings are errors, as in the rest of the suite.
- A runnable block must be followed (blank lines allowed between) by a ````` ```text ````` block: its expected output.
  Lines are compared one for one, trailing whitespace and leading/trailing blank lines ignored. Inside a line,
  ``...`` matches any text (timings); a line that is only ``...`` matches any number of lines (a long help text
  shown in part).

Why mktestdocs: tried beside pytest-markdown-docs on the same blocks; mktestdocs is a library this file calls, so
the file decides which blocks run and compares their output, whereas pytest-markdown-docs is a collection plugin
(``--markdown-docs``) that runs every ``python`` fence unless told ``notest``, runs no shell commands and compares
no output.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# exec_python is mktestdocs' Python executor (the package does not re-export it)
exec_python = pytest.importorskip(
    "mktestdocs.__main__", reason="the docs examples run through mktestdocs (pip install mktestdocs)"
).exec_python

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
MARKER = "<!-- run -->"
TIMEOUT_S = 60
RUNNABLE_LANGS = ("bash", "python")

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence
    lang: str  # the fence's first word, "" when none
    body: str
    marked: bool  # the line before the opening fence is MARKER

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


def test_the_convention_holds() -> None:
    """Every marker stands before a runnable fence, and every runnable block has its expected output; the docs have
    some runnable examples at all."""
    problems = []
    for path in pages():
        lines = path.read_text(encoding="utf-8").splitlines()
        starts = {b.line for b in blocks_of(path)}
        for n, line in enumerate(lines, 1):
            if line.strip() == MARKER and (n + 1) not in starts:
                problems.append(f"{path.relative_to(ROOT)}:{n}: {MARKER} is not right before a fenced block")
    for block, expected in EXAMPLES:
        if block.lang not in RUNNABLE_LANGS:
            problems.append(f"{block.id}: a runnable block is one of {RUNNABLE_LANGS}, not {block.lang!r}")
        if expected is None:
            problems.append(f"{block.id}: a runnable block is followed by a ```text block of its expected output")
    assert not problems, "\n".join(problems)
    assert len(EXAMPLES) >= 4, [b.id for b, _ in EXAMPLES]


def test_the_matcher() -> None:
    assert matches("a\nb", "a\nb  \n\n")
    assert not matches("a\nb", "a\nc")
    assert not matches("a", "a\nb")
    assert matches("passed  x (... s)\ndone", "passed  x (0.3 s)\ndone")
    assert matches("head\n...\ntail", "head\n1\n2\ntail")
    assert matches("head\n...\ntail", "head\ntail")
    assert not matches("head\n...\ntail", "head\n1\ntail\nmore")


@pytest.mark.parametrize(("block", "expected"), EXAMPLES, ids=[b.id for b, _ in EXAMPLES])
def test_example_runs_and_prints_what_the_page_says(
    block: Block, expected: Block | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert expected is not None, f"{block.id}: no ```text block of expected output after it"
    if block.lang == "bash":
        actual = run_bash(block.body, tmp_path)
    elif block.lang == "python":
        actual = run_python(block.body, tmp_path, monkeypatch)
    else:
        pytest.fail(f"{block.id}: cannot run a {block.lang!r} block")
    assert matches(expected.body, actual), (
        f"{block.id}: the output is not what {expected.id} says\n--- expected\n{expected.body}\n--- actual\n{actual}"
    )
