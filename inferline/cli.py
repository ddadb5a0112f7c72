"""``inferline``: the one command. Each subcommand is one stage's own CLI (``python -m inferline.<stage>`` runs the
same parser), imported only when it is chosen, so ``inferline --help`` stays fast and a batch worker never pays for
torch."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from inferline import __version__

__all__ = ["COMMANDS", "main"]


class Command(NamedTuple):
    module: str  # the stage's CLI module; it defines main(argv, prog) -> int
    first: str | None  # the stage subcommand this command stands for (None: the stage's whole CLI)
    help: str


COMMANDS: dict[str, Command] = {
    "generate": Command("inferline.features.__main__", "generate", "write a seeded synthetic data set as Parquet"),
    "validate": Command("inferline.features.__main__", "validate", "validate data files; quarantine bad rows"),
    "check": Command("inferline.features.__main__", "check", "run the contract checks on a pipeline spec"),
    "train": Command("inferline.training.__main__", None, "train a pipeline's model on validated data"),
    "export": Command("inferline.export.__main__", None, "publish, promote, roll back, list releases"),
    "serve": Command("inferline.serving.__main__", None, "run the local Triton and its edge; predict"),
    "batch": Command("inferline.batch.__main__", None, "distributed batch inference on Dask"),
    "monitor": Command("inferline.monitor.__main__", None, "the monitor service, its report and alert rules"),
    "rollout": Command("inferline.monitor.rollout_cli", None, "shadow and canary rollouts that decide by themselves"),
    "bench": Command("inferline.benchmarks.__main__", None, "the benchmark suite (never beside other work)"),
    "demo": Command("inferline.demo", None, "the whole flow end to end on the embedded defaults"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="inferline",
        description="inferline: validated data -> PyTorch -> ONNX parity gate -> Triton, Dask batch, monitoring. "
        "`inferline COMMAND --help` describes each command.",
    )
    top.add_argument("--version", action="version", version=f"inferline {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return top


def main(argv: list[str] | None = None) -> int:
    from inferline.core.command import until_pipe_closes  # `inferline --help | head` ends quietly too

    return until_pipe_closes(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        parser().parse_args(args)  # prints the help or the error (exit 2)
        return 2
    command = COMMANDS[args[0]]
    stage = importlib.import_module(command.module)
    if command.first is None:
        return int(stage.main(args[1:], prog=f"inferline {args[0]}"))
    return int(stage.main([command.first, *args[1:]], prog="inferline"))


if __name__ == "__main__":
    sys.exit(main())
