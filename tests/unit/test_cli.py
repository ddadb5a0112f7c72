"""The ``inferline`` command line: every option documented with its default, every command's help prints, and a
user's mistake ends in one line naming the bad value and exit status 1 (or 2 for a usage error), never a traceback.

The mistakes run as real subprocesses (``python -m inferline ...``) against real files in a temporary directory;
nothing here starts Triton, Dask or a monitor: each mistake is caught before anything would start.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest

from inferline.core.command import HelpFormatter
from inferline.serving.__main__ import build_parser as serving_parser
from inferline.serving.daemon import foreground_command
from tests.cli_cases import _all_parsers


def _shown(default: object) -> str:
    return " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)


def test_every_option_has_help_and_its_default_is_shown() -> None:
    checked = 0
    for parser in _all_parsers():
        assert parser.formatter_class is HelpFormatter, parser.prog
        rendered = " ".join(parser.format_help().split())  # wrapping aside
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip(), f"{parser.prog} {name} has no help"
            flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
            if action.option_strings and action.default not in (None, []) and not flag:
                assert f"(default: {_shown(action.default)})" in rendered, f"{parser.prog} {name}: default not shown"
            checked += 1
    assert checked > 80  # every stage's options were walked, not an empty list


def test_shared_options_belong_to_each_subcommand() -> None:
    """--workdir (serve) and --repository (export) go after the subcommand, on every subcommand that uses them."""
    serve = serving_parser("inferline serve")
    for name in ("up", "status", "down", "apply", "predict"):
        required = ["--file", __file__] if name == "predict" else []
        args = serve.parse_args([name, "--workdir", "w", *required])
        assert (args.command, args.workdir) == (name, "w")
    export = importlib.import_module("inferline.export.__main__").build_parser("inferline export")
    for argv in (["publish"], ["promote", "2"], ["rollback"], ["history"]):
        args = export.parse_args([*argv, "--repository", "repo"])
        assert args.repository == "repo" and args.command == argv[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--workdir", "w", "--http-port", "9000", "--repository", "r"],  # `python -m inferline.serving up ...`
        ["up", "--http-port", "9000", "--workdir", "w", "--foreground", "--repository", "r"],
    ],
)
def test_the_detached_up_runs_a_valid_foreground_command(argv: list[str]) -> None:
    command = foreground_command(argv)
    assert command[:3] == [sys.executable, "-m", "inferline.serving"] and command.count("--foreground") == 1
    args = serving_parser(None).parse_args(command[3:])
    assert (args.command, args.workdir, args.http_port, args.repository, args.foreground) == (
        "up",
        "w",
        9000,
        "r",
        True,
    )
