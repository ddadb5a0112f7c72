"""What tests/unit/test_cli.py (the tests that start no process) and tests/system/test_cli.py (those that do) both use:
helpers and case tables kept in one place."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator

from inferline.cli import COMMANDS

STAGE_MODULES = sorted({c.module for c in COMMANDS.values()})


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subparser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def _all_parsers() -> Iterator[argparse.ArgumentParser]:
    for module in STAGE_MODULES:
        yield from _parsers(importlib.import_module(module).build_parser(None))
