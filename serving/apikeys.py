"""Caller API keys for the edge (``inferline serve up --api-keys FILE``).

The file holds one line per caller, ``<name>:<sha256 of the key, hex>``: the hashes, never the keys, so a copy of
the file lets nobody in. Keys are 256-bit random tokens (``new_key``), so a plain SHA-256 is the right hash (a
slow password hash protects low-entropy secrets; these are not). A presented key is hashed and compared with
every stored hash with ``hmac.compare_digest``, so neither the comparison nor which caller matched shows in the
timing. The file is read again whenever it changes (its mtime and size), so adding or revoking a key needs no
restart; a file that became malformed keeps the keys last read and says so in the log. Callers send
``Authorization: Bearer <key>`` (the KServe and OpenAI-style convention).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from inferline.core.errors import UserError

__all__ = ["ApiKeyError", "ApiKeys", "add_key", "new_key", "revoke_key"]

log = logging.getLogger("inferline.serving.apikeys")
KEY_PREFIX = "ilk_"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_LINE = re.compile(r"([A-Za-z0-9_.@-]{1,64}):([0-9a-f]{64})")


class ApiKeyError(UserError, ValueError):
    """The keys file is malformed, or a key name is not valid."""

    docs = "explanation/security.md"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _parse(path: Path) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise ApiKeyError(
                f"{path}, line {number}: expected '<name>:<64 hex digits of sha256(key)>', got {line[:40]!r}; "
                "write keys with `inferline serve keys add NAME --file FILE`"
            )
        keys[m.group(1)] = bytes.fromhex(m.group(2))
    return keys


class ApiKeys:
    """The callers allowed at the edge, read from ``path`` and re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ApiKeyError(
                f"--api-keys {self.path}: no such file; create one with `inferline serve keys add NAME --file "
                f"{self.path}`"
            )
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, bytes] = {}
        self._reload(strict=True)

    def _reload(self, strict: bool = False) -> None:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            if strict:
                raise ApiKeyError(f"--api-keys {self.path}: {exc.strerror}") from exc
            log.error(
                "API keys file %s unreadable (%s); keeping the %d keys read before", self.path, exc, len(self._keys)
            )
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            self._keys = _parse(self.path)
        except (ApiKeyError, OSError, UnicodeDecodeError) as exc:
            if strict:
                raise
            log.error("%s; keeping the %d keys read before", exc, len(self._keys))
        self._stamp = stamp

    def caller(self, presented: str | None) -> str | None:
        """The name of the caller whose key ``presented`` is, or None (no key, or not one of the file's)."""
        self._reload()
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for name, stored in self._keys.items():  # every entry, always: the time does not say which one matched
            if hmac.compare_digest(stored, digest):
                found = name
        return found

    def names(self) -> list[str]:
        """The callers that have a key, sorted."""
        self._reload()
        return sorted(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _write(path: Path, keys: dict[str, bytes]) -> None:
    """The keys file, atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# inferline API keys: <name>:<sha256 of the key>; the keys themselves are not kept\n")
        fh.writelines(f"{name}:{digest.hex()}\n" for name, digest in keys.items())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def add_key(path: Path, name: str) -> str:
    """A new key for caller ``name`` (its hash written to ``path``); returns the key, shown only this once."""
    if not _NAME.fullmatch(name):
        raise ApiKeyError(f"key name {name[:70]!r}: letters, digits, '_', '.', '@' and '-' only, at most 64")
    keys = _parse(path) if Path(path).exists() else {}
    if name in keys:
        raise ApiKeyError(f"{path} already has a key named {name!r}; revoke it first or choose another name")
    key = new_key()
    keys[name] = _digest(key)
    _write(Path(path), keys)
    return key


def revoke_key(path: Path, name: str) -> None:
    """Remove caller ``name``'s key from ``path``; a running edge stops accepting it at its next request."""
    keys = _parse(path) if Path(path).exists() else {}
    if name not in keys:
        raise ApiKeyError(f"{path} has no key named {name!r}; it has {sorted(keys)}")
    del keys[name]
    _write(Path(path), keys)
