"""Switching the release a running Triton server serves, through its model-control API (explicit mode, admin key).

``switch_release`` moves from the release being served to another one without a failed request and without ever
pairing one release's features with another release's model:

1. the target release's files are checked against its manifest (``Registry.release_files``): a corrupt or missing
   release is refused before the server is touched;
2. the inner models load the target versions beside the served ones (version policy lists both) and the switch
   waits until both are ready; the ensemble still routes to the served pair;
3. the ensemble is reloaded pinned to the target pair: Triton swaps it when the new one is ready, so requests move
   from one complete pair to the other;
4. the inner models are reloaded with the target version only, which unloads the old pair.

If step 2 or 3 fails, the configs are restored and reloaded, and ``ReleaseSwitchError`` says why: the server keeps
serving what it served. Moving the registry's pointer (and its audit entry) is the caller's step, after success.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferline.export.config import model_names
from inferline.export.publish import activate
from inferline.export.registry import Registry
from inferline.features.errors import UserError
from inferline.serving.secrets import ADMIN_HEADER

__all__ = ["ReleaseSwitchError", "SwitchResult", "switch_release"]


class ReleaseSwitchError(UserError, RuntimeError):
    """The switch did not happen; the server still serves the release it served before."""


@dataclass
class SwitchResult:
    pipeline: str
    from_version: int | None
    to_version: int
    seconds: float
    steps: list[str] = field(default_factory=list)


def _client(url: str) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url, connection_timeout=30.0, network_timeout=120.0)


def _ready_versions(client: Any, headers: dict[str, str], name: str) -> set[int]:
    index = client.get_model_repository_index(headers=headers)
    return {
        int(m["version"]) for m in index if m.get("name") == name and m.get("state") == "READY" and m.get("version")
    }


def _wait(client: Any, headers: dict[str, str], name: str, versions: set[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        ready = _ready_versions(client, headers, name)
        if versions <= ready:
            return
        if time.monotonic() > deadline:
            raise ReleaseSwitchError(f"{name} versions {sorted(versions)} not ready within {timeout_s:.0f} s")
        time.sleep(0.1)  # readiness polling interval


def switch_release(
    url: str, admin_key: str, repository: Path, pipeline: str, to_version: int, timeout_s: float = 120.0
) -> SwitchResult:
    started = time.perf_counter()
    repository = Path(repository)
    names = model_names(pipeline)
    Registry(repository, pipeline).release_files(to_version)  # refuses a corrupt or incomplete release
    headers = {ADMIN_HEADER: admin_key}
    client = _client(url)
    result = SwitchResult(pipeline, None, to_version, 0.0)
    try:
        ready = _ready_versions(client, headers, names["model"])
        current = max(ready) if ready else None
        result.from_version = current
        if current == to_version:
            result.steps.append("already served")
            return result
        try:
            if current is not None:  # 2. both pairs loaded, the ensemble still on the served pair
                activate(repository, pipeline, current, also_load=[to_version])
                for key in ("preprocess", "model"):
                    client.load_model(names[key], headers=headers)
                    _wait(client, headers, names[key], {current, to_version}, timeout_s)
                result.steps.append(f"loaded {pipeline}:{to_version} beside {pipeline}:{current}")
            activate(repository, pipeline, to_version, also_load=[current] if current is not None else [])
            client.load_model(names["ensemble"], headers=headers)  # 3. the ensemble now routes to the new pair
            _wait(client, headers, names["ensemble"], {1}, timeout_s)
            result.steps.append(f"ensemble routes to {pipeline}:{to_version}")
        except Exception as exc:  # any failure: put the served release's configs back (re-raised below)
            if current is not None:
                activate(repository, pipeline, current)
                for key in ("preprocess", "model", "ensemble"):
                    try:
                        client.load_model(names[key], headers=headers)
                    except Exception:  # noqa: BLE001 - best effort; the served versions stay loaded anyway
                        pass
            raise ReleaseSwitchError(
                f"switching {pipeline} from {current} to {to_version} failed ({type(exc).__name__}: {exc}); the "
                f"server still serves {pipeline}:{current}"
            ) from exc
        activate(repository, pipeline, to_version)  # 4. only the new pair stays loaded
        for key in ("preprocess", "model"):
            client.load_model(names[key], headers=headers)
        result.steps.append(f"unloaded {pipeline}:{current}" if current is not None else "loaded")
    finally:
        client.close()
    result.seconds = time.perf_counter() - started
    return result
