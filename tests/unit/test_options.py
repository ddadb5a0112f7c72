"""core.options: a dataclass field is its command-line option (flag, help, type, default written once)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from inferline.batch.job import JobConfig
from inferline.core.command import positive_int
from inferline.core.options import add_options, config, from_args, option


@config
class Example:
    source: Path = option("--source", "where rows come from", convert=Path)
    rows: int = option("--rows", "rows to read", default=10, type=positive_int)
    fast: bool = option("--fast", "skip the slow checks", default=False)
    mode: str = option("--mode", "how to read", default="a", choices=("a", "b"))
    derived: str = "none"  # not an option: the command sets it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="example", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_options(p, Example)
    return p


def test_the_field_is_the_option_with_its_default_type_and_help() -> None:
    args = parser().parse_args(["--source", "in"])
    built = from_args(Example, args, derived="set")
    assert built == Example(source=Path("in"), rows=10, fast=False, mode="a", derived="set")
    assert from_args(Example, parser().parse_args(["--source", "x", "--rows", "3", "--fast", "--mode", "b"])) == (
        Example(source=Path("x"), rows=3, fast=True, mode="b")
    )
    text = parser().format_help()
    assert "--source SOURCE" in text and "where rows come from" in text and "(default: 10)" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [([], "the following arguments are required: --source"), (["--source", "x", "--rows", "0"], "--rows")],
)
def test_a_missing_or_bad_option_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_batch_run_options_come_from_job_config() -> None:
    """`inferline batch run`'s flags are JobConfig's fields: the defaults cannot drift apart any more."""
    from inferline.batch.__main__ import build_parser

    args = build_parser().parse_args(["run", "--input", "a.parquet", "--output", "out"])
    config_ = from_args(JobConfig, args, model="fraud")
    assert config_ == JobConfig(inputs=["a.parquet"], output=Path("out"), model="fraud")
