"""The secrets of a serving work directory: the admin key that guards Triton's admin APIs (model repository,
logging, trace, shared memory), and the monitor's ingest key that the edge's sampler (``serving.edge_tap``), the
client's ``MonitorTap`` and the batch job present to the monitor's ``POST /v1/samples`` and ``/v1/labels``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["ADMIN_HEADER", "admin_key", "monitor_key"]

ADMIN_HEADER = "admin-key"


def _key(workdir: Path, variable: str, filename: str) -> str:
    """``$variable``, else the file named by ``${variable}_FILE``, else one generated once into
    ``<workdir>/<filename>`` with mode 0600 (created exclusively, so two processes starting at once agree)."""
    if value := os.environ.get(variable):
        return value.strip()
    if name := os.environ.get(f"{variable}_FILE"):
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(
                f"{variable}_FILE names {path}, which does not exist; create it "
                "(a single line with the secret) or unset the variable"
            )
        return path.read_text().strip()
    path = Path(workdir) / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole to a private temporary file, then linked into place: a reader never sees it half written,
        # and of two processes creating it at once, the first link wins and both read that one
        tmp = path.with_name(f".{filename}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def admin_key(workdir: Path) -> str:
    """``INFERLINE_ADMIN_KEY``, else the file named by ``INFERLINE_ADMIN_KEY_FILE``, else one generated once into
    ``<workdir>/admin.key`` with mode 0600."""
    return _key(workdir, "INFERLINE_ADMIN_KEY", "admin.key")


def monitor_key(workdir: Path) -> str:
    """The monitor's ingest key (``Authorization: Bearer <key>`` on ``POST /v1/samples`` and ``/v1/labels``):
    ``INFERLINE_MONITOR_KEY``, else the file named by ``INFERLINE_MONITOR_KEY_FILE``, else one generated once into
    ``<workdir>/monitor.key`` with mode 0600. ``inferline serve up`` (its edge sampler) and ``inferline monitor
    run`` given the same ``--workdir`` share it; callers of the edge never see it."""
    return _key(workdir, "INFERLINE_MONITOR_KEY", "monitor.key")
