"""Pipeline specs, one module each. The demo pipeline is ``fraud``."""

from __future__ import annotations

import pkgutil


def available() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
