"""Contract checks: what proves a pipeline spec honours the project's contracts, runnable on any pipeline.

Every stage lowers the same declarative spec several ways (rules as a scalar, a vector and a pandera check; kernels
as a scalar and a vector form; the request path row by row and column by column; batch validation and the served
status). Each check drives one of those agreements with hypothesis, on values drawn from the pipeline's own
generated rows, the edge cases each kind of column meets on the wire (nulls, NaN and Inf, blank and damaged text,
naive and far-off timestamps) and anything hypothesis finds, and raises ``AssertionError`` when two lowerings
disagree. They were the test suite's own; this module is their public face, so that a user can run them on their
own pipeline (the checks themselves are ``features.check_cases``, what they draw ``features.check_strategies``):

- ``run_checks(pipeline) -> CheckReport``: every check, each failure kept with a one-line reason;
- ``iter_checks(pipeline)``: the named checks (``Check``), one at a time, for a runner of one's own;
- ``parametrize_with_checks(pipelines)``: a ``pytest.mark.parametrize`` over (pipeline, check), in the manner of
  scikit-learn's, so a project's test suite runs each check as a test of its own;
- ``inferline check PIPELINE`` (``features.__main__``): the same at the command line.

A pipeline is given as a module (``SPEC`` and ``generate(n_rows, seed)``), its name (as ``--pipeline`` takes it:
a name in ``inferline.features.pipelines`` or an importable ``pkg.mod``), or a ``Pipeline``. hypothesis is a
dependency of the package for these checks, loaded when a check runs, not when this module is imported (``inferline
--help`` and ``inferline generate`` do not pay for it); pytest is imported only inside ``parametrize_with_checks``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from inferline.features.check_cases import (
    check_batch_features_agree,
    check_generate_is_deterministic,
    check_kernels_agree,
    check_pandera_and_evaluator_agree,
    check_request_paths_agree,
    check_rules_agree,
    check_spec_round_trip,
    check_statuses_match_batch_validation,
    check_timestamp_parsers_agree,
)
from inferline.features.check_strategies import EXAMPLES, run_budget
from inferline.features.spec import PipelineSpec, SpecError, load_pipeline_module

__all__ = [
    "CHECKS",
    "Check",
    "CheckReport",
    "CheckResult",
    "Pipeline",
    "PipelineLike",
    "as_pipeline",
    "check_names",
    "iter_checks",
    "parametrize_with_checks",
    "run_checks",
]

REASON_CHARS = 400  # a failure's reason is one line, cut here (the falsifying example can be long)


@dataclass(frozen=True)
class Pipeline:
    """A pipeline under check: its spec and the generator of its synthetic rows (``generate(n_rows, seed=...)``,
    every spec column with its raw dtype), which the checks draw realistic values and frames from."""

    spec: PipelineSpec
    generate: Callable[..., pd.DataFrame]

    @property
    def name(self) -> str:
        return self.spec.name


PipelineLike = Pipeline | ModuleType | str


def as_pipeline(pipeline: PipelineLike) -> Pipeline:
    """``pipeline`` as a ``Pipeline``: a name is loaded as ``--pipeline`` loads it (``load_pipeline_module``; an
    unknown one is a ``SpecError`` naming the known pipelines), a module must define ``SPEC`` and ``generate``."""
    if isinstance(pipeline, Pipeline):
        return pipeline
    module = load_pipeline_module(pipeline) if isinstance(pipeline, str) else pipeline
    spec, generate = getattr(module, "SPEC", None), getattr(module, "generate", None)
    if not isinstance(spec, PipelineSpec):
        raise SpecError(f"module {module.__name__!r} defines no SPEC of type PipelineSpec")
    if not callable(generate):
        raise SpecError(
            f"module {module.__name__!r} defines no generate(n_rows, seed) function; the checks draw their rows "
            "from it (write one that returns a DataFrame of realistic rows with every spec column)"
        )
    return Pipeline(spec, generate)


# ------------------------------------------------------------------------------------------ running them
CheckFunction = Callable[[Pipeline, Path], None]


@dataclass(frozen=True)
class Check:
    """One named check: ``check(pipeline, workdir)`` returns when the pipeline honours the contract it names and
    raises ``AssertionError`` (with what disagreed) when not; ``workdir`` is an empty folder it may write to."""

    name: str
    func: CheckFunction

    @property
    def description(self) -> str:
        """The first sentence of the check's docstring: what it proves."""
        return " ".join((self.func.__doc__ or "").split()).partition(". ")[0].rstrip(".")

    def __call__(self, pipeline: Pipeline, workdir: Path) -> None:
        self.func(pipeline, workdir)

    def __repr__(self) -> str:  # pytest shows it in a failing test's parameters
        return f"Check({self.name})"


def _named(func: CheckFunction) -> Check:
    return Check(func.__name__.removeprefix("check_"), func)


CHECKS: tuple[Check, ...] = tuple(
    map(
        _named,
        (
            check_generate_is_deterministic,
            check_spec_round_trip,
            check_rules_agree,
            check_kernels_agree,
            check_batch_features_agree,
            check_request_paths_agree,
            check_statuses_match_batch_validation,
            check_pandera_and_evaluator_agree,
            check_timestamp_parsers_agree,
        ),
    )
)


def check_names() -> list[str]:
    """The checks' names, in the order they run."""
    return [check.name for check in CHECKS]


def iter_checks(pipeline: PipelineLike, only: Sequence[str] | None = None) -> Iterator[Check]:
    """The checks that apply to ``pipeline`` (every check applies to every pipeline today), those named in
    ``only`` when given. ``pipeline`` is loaded first, so an unknown pipeline fails before any check runs."""
    as_pipeline(pipeline)
    unknown = sorted(set(only or ()) - set(check_names()))
    if unknown:
        raise ValueError(f"no check named {unknown}; the checks are {check_names()}")
    for check in CHECKS:
        if only is None or check.name in only:
            yield check


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome on one pipeline: ``reason`` is the failure in one line (None when it passed)."""

    pipeline: str
    check: str
    passed: bool
    reason: str | None
    seconds: float

    def line(self) -> str:
        """``passed  NAME (1.2 s)`` or ``FAILED  NAME (1.2 s): reason``."""
        if self.passed:
            return f"passed  {self.check} ({self.seconds:.1f} s)"
        return f"FAILED  {self.check} ({self.seconds:.1f} s): {self.reason}"


@dataclass(frozen=True)
class CheckReport:
    """Every check run on one pipeline, in order."""

    pipeline: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def summary(self) -> str:
        """One line: how many checks ran on the pipeline and how many failed."""
        n = len(self.results)
        if self.passed:
            return f"{self.pipeline}: all {n} checks passed"
        return f"{self.pipeline}: {len(self.failed)} of {n} checks failed ({', '.join(r.check for r in self.failed)})"


def _reason(exc: BaseException) -> str:
    """A failure in one line: the exception's type and message (the first of several distinct failures hypothesis
    found, saying how many), then the failing example hypothesis noted on it, cut at ``REASON_CHARS``."""
    found = 1
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        found = max(found, len(exc.exceptions))
        exc = exc.exceptions[0]
    message = str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if found > 1:
        text += f" (the first of {found} distinct failures)"
    for note in getattr(exc, "__notes__", []):
        if note.startswith(("Failing test case", "Falsifying example")):
            text += f" | {note}"
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def run_checks(
    pipeline: PipelineLike,
    *,
    only: Sequence[str] | None = None,
    examples: int = EXAMPLES,
    on_result: Callable[[CheckResult], None] | None = None,
) -> CheckReport:
    """Run every check (or those named in ``only``) on ``pipeline`` and report each: a check that raises fails
    with its reason in one line, and the next check still runs. ``examples`` is hypothesis' budget per property
    (more finds rarer disagreements, slower); no example database is written. ``on_result`` is called as each
    check ends (``inferline check`` prints its line there)."""
    target = as_pipeline(pipeline)
    chosen = list(iter_checks(target, only))
    results = []
    for check in chosen:
        started = time.perf_counter()
        try:
            # what a check (or the pipeline's generate) prints is dropped: the report is one line per check
            with (
                run_budget(examples),
                tempfile.TemporaryDirectory() as tmp,
                contextlib.redirect_stdout(io.StringIO()),
            ):
                check(target, Path(tmp))
        except Exception as exc:  # noqa: BLE001 - any exception is this check's failure; the next check runs
            result = CheckResult(target.name, check.name, False, _reason(exc), time.perf_counter() - started)
        else:
            result = CheckResult(target.name, check.name, True, None, time.perf_counter() - started)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return CheckReport(target.name, tuple(results))


def parametrize_with_checks(pipelines: Iterable[PipelineLike]) -> Any:
    """A ``pytest.mark.parametrize`` over ``(pipeline, check)``: every check on every pipeline, each a test of its
    own with the id ``<pipeline>-<check>``. The test calls ``check(pipeline, tmp_path)``:

        @parametrize_with_checks(["fraud", "my_project.pipelines.loans"])
        def test_contract(pipeline, check, tmp_path):
            check(pipeline, tmp_path)

    pytest is imported here, so the package does not depend on it."""
    import pytest

    params = [
        pytest.param(target, check, id=f"{target.name}-{check.name}")
        for target in map(as_pipeline, pipelines)
        for check in iter_checks(target)
    ]
    return pytest.mark.parametrize(("pipeline", "check"), params)
