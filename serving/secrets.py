"""The admin secret that guards Triton's admin APIs (model repository, logging, trace, shared memory)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["ADMIN_HEADER", "admin_key"]

ADMIN_HEADER = "admin-key"


def admin_key(workdir: Path) -> str:
    """``INFERLINE_ADMIN_KEY``, else the file named by ``INFERLINE_ADMIN_KEY_FILE``, else one generated once into
    ``<workdir>/admin.key`` with mode 0600."""
    if value := os.environ.get("INFERLINE_ADMIN_KEY"):
        return value.strip()
    if name := os.environ.get("INFERLINE_ADMIN_KEY_FILE"):
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(
                f"INFERLINE_ADMIN_KEY_FILE names {path}, which does not exist; create it "
                "(a single line with the secret) or unset the variable"
            )
        return path.read_text().strip()
    path = Path(workdir) / "admin.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()
