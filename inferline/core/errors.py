"""The one base of the errors a user's input causes (a path, a name, a value, a port), as opposed to a bug.

A ``UserError``'s message says what was received, what is allowed and how to fix it, on one line. Command lines
catch ``UserError`` at their boundary, print the message and exit 1; any other exception is a bug and keeps its
traceback. Stage errors that a user's input can cause derive from it (``SpecError``, ``FileLevelError``,
``RegistryError``, ...), beside the builtin type callers already catch (``ValueError``, ``FileNotFoundError``).
"""

from __future__ import annotations

__all__ = ["PathNotFound", "UserError"]


class UserError(Exception):
    """A mistake in what the user gave; the message says what was received, what is allowed, how to fix it."""


class PathNotFound(UserError, FileNotFoundError):
    """A file or directory the user named (or that a command needs to find) does not exist."""
