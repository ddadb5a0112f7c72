"""What every stage's command line shares: the parser (help on every option, with its default), argument types that
refuse a bad value at parse time, and the boundary where a user's mistake becomes one line and an exit status.

Exit statuses: 0 done; 1 a ``UserError`` (a bad path, a missing run or release, an unknown pipeline, a port in use,
an unreachable server): one line on stderr, ``<command>: error: <what was received, what is expected, how to fix
it> (docs: docs/<the page that explains it>)``; 2 a usage error found by argparse (an unknown option, a value of
the wrong type). Any other exception is a bug and keeps its traceback. A reader that goes away early
(``inferline serve status | head``) ends the command quietly with status 141 (128 + SIGPIPE, what a Unix tool
killed by SIGPIPE reports), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferline.core.errors import PortInUse, UserError, user_message

__all__ = [
    "BROKEN_PIPE_EXIT",
    "HelpFormatter",
    "Parser",
    "check_port_free",
    "existing_dir",
    "existing_file",
    "fraction",
    "new_dir",
    "new_file",
    "port",
    "positive_float",
    "positive_int",
    "run",
    "until_pipe_closes",
]

Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless it has none worth showing (None, an empty list, a flag's
    False); a list default reads as the words one would type (``a b``, not ``['a', 'b']``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, argparse.SUPPRESS, [])
            or isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))
        ):
            return text
        return text + " (default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        if isinstance(action.default, list | tuple) and action.default:
            shown = argparse.Namespace(**vars(action))
            shown.default = " ".join(map(str, action.default))
            return super()._expand_help(shown)  # type: ignore[arg-type]
        return super()._expand_help(action)


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class _Subcommands(_SubParsers):
    """Subcommands whose ``help`` is also their description (``inferline serve up --help`` says what it does)."""

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if "help" in kwargs:
            kwargs.setdefault("description", kwargs["help"])
        return super().add_parser(name, **kwargs)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help shows every default; its subparsers are ``Parser``s too (argparse makes them
    of the parent's class), each described by its ``help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Subcommands)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` (usage errors exit 2), run the chosen handler (``set_defaults(func=...)``) and turn a
    ``UserError`` into one line on stderr and exit status 1."""
    return until_pipe_closes(lambda: _run(parser, argv))


BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE


def until_pipe_closes(main: Callable[[], int]) -> int:
    """``main()``, its output flushed; when the reader of stdout has gone (a ``BrokenPipeError``), stop quietly
    with ``BROKEN_PIPE_EXIT`` and point stdout at /dev/null, so that the interpreter's own flush at exit finds
    nothing to complain about (Python's documented recipe for SIGPIPE)."""
    try:
        try:
            return main()
        finally:  # a usage error or --help leaves through SystemExit: its output is flushed here too
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_EXIT


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(None if argv is None else list(argv))
    func: Handler = args.func
    try:
        return int(func(args))
    except UserError as exc:
        command = " ".join(x for x in (parser.prog, getattr(args, "command", None)) if x)
        # one line, whatever the message's own layout, ending with the docs page that explains the error
        print(f"{command}: error: {user_message(exc, one_line=True)}", file=sys.stderr)
        return 1


def check_port_free(flag: str, number: int, host: str = "127.0.0.1") -> None:
    """``number`` can be listened on at ``host`` (bound the way servers bind, with SO_REUSEADDR, so a port in
    TIME_WAIT after a stop counts as free); else a ``PortInUse`` naming ``flag``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, number))
        except OSError as exc:
            raise PortInUse(
                f"{flag} {number} is in use on {host} ({exc.strerror}); stop what listens there or choose a free "
                f"port with {flag} N"
            ) from exc


# ---- argument types: a bad value is a usage error (exit 2) naming the option and the value ----


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a whole number of 1 or more")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a number above 0")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a number of 0 or more")
    return value


def fraction(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a share between 0 and 1 (0.05 is 5 %)")
    return value


def port(text: str) -> int:
    value = _number(text, int, "a TCP port number")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a TCP port number from 1 to 65535")
    return value


def bind_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` to listen on (``0.0.0.0:8443``, ``10.0.0.5:8080``, ``[::1]:8080``): the host as written, the
    port a TCP port number."""
    host, sep, number = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or any(c.isspace() for c in host):
        raise argparse.ArgumentTypeError(f"got {text!r}; expected HOST:PORT, e.g. 0.0.0.0:8080 or 10.0.0.5:8443")
    return host, port(number)


def _number(text: str, kind: type[int] | type[float], what: str) -> Any:
    try:
        return kind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected {what}") from exc


def existing_file(text: str) -> str:
    path = Path(text)
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {state}; expected an existing file")
    return text


def existing_dir(text: str) -> str:
    path = Path(text)
    if not path.is_dir():
        state = "is a file" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {state}; expected an existing directory")
    return text


def new_dir(text: str) -> str:
    """A directory that exists or can be created: nothing on its path is a file."""
    _creatable(Path(text), text, directory=True)
    return text


def new_file(text: str) -> str:
    """A file that can be written: it is not a directory and no parent on its path is a file."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file path to write")
    _creatable(Path(text).parent, text, directory=False)
    return text


def _creatable(path: Path, text: str, directory: bool) -> None:
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = f"{text!r} is a file" if p == Path(text) else f"{str(p)!r} on the path of {text!r} is a file"
                raise argparse.ArgumentTypeError(f"{where}; expected a {'directory' if directory else 'file'} path")
            return
