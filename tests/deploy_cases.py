"""What tests/unit/test_deploy.py (the tests that start no process) and tests/system/test_deploy_system.py (those that
do) both use: helpers and case tables kept in one place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy" / "docker"
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` with no variable set: the default (or empty)."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


# ---------------------------------------------------------------------------------------------------------------
# compose


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(source on the host, target in the container) of each bind mount, defaults interpolated."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/", "$")):
                continue  # a named volume
        elif volume.get("type") == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        mounts.append(((DOCKER / interpolate(source)).resolve(), target))
    return mounts


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = [(p, d) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml" for d in docs(p)]
    assert out
    return out


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] == kind]
