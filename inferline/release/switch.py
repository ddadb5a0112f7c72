"""Switching the release a running Triton server serves, through its model-control API (explicit mode, admin key).

``switch_release`` moves from the release being served to another one without a failed request and without ever
pairing one release's features with another release's model:

1. the target release's files are checked against its manifest (``Registry.release_files``): a corrupt or missing
   release is refused before the server is touched, and so is a switch between the two layouts
   (``Registry.layout``: fused and ensemble), which takes a server restart;
2. the target release loads beside the served one and the switch waits until both are ready. Fused layout
   (``--target local``): ``<p>``'s version policy lists both versions, each of them a whole release; Triton sends
   a request that names no version to the highest ready version, so a promote to a newer release switches here.
   Ensemble layout (``--target gpu``): the inner models list both versions, the ensemble still routes to the served
   pair;
3. ensemble layout: the ensemble is reloaded pinned to the target pair: Triton swaps it when the new one is ready,
   so requests move from one complete pair to the other;
4. the models are reloaded with the target version only, which unloads the old release once its requests in flight
   are answered (a rollback to an older release of the fused layout switches here).

If step 2, 3 or 4 fails, the served release's configs are restored and reloaded, and ``ReleaseSwitchError`` says
why: the server keeps serving what it served (and it alone). Moving the registry's pointer (and its audit entry)
is the caller's step, after success.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_bytes
from inferline.core.secrets import ADMIN_HEADER
from inferline.release.registry import Layout, Registry, RegistryError, model_names

__all__ = [
    "QualityVerdict",
    "ReleaseSwitchError",
    "SwitchResult",
    "activate",
    "keep_only",
    "load_beside",
    "set_current",
    "switch_release",
]


class QualityVerdict(Protocol):
    """A promotion's quality comparison as the registry records it (``export.quality.QualityReport``)."""

    @property
    def status(self) -> str: ...

    @property
    def accepted_reason(self) -> str | None: ...

    def headline(self) -> dict[str, Any]: ...


class ReleaseSwitchError(UserError, RuntimeError):
    """The switch did not happen; the server still serves the release it served before."""

    docs = "how-to/alerts-and-rollback.md"


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


def _ready(client: Any, headers: dict[str, str]) -> dict[str, set[int]]:
    """The READY versions of every model the server knows, from its repository index."""
    ready: dict[str, set[int]] = {}
    for m in client.get_model_repository_index(headers=headers):
        if m.get("state") == "READY" and m.get("version"):
            ready.setdefault(str(m["name"]), set()).add(int(m["version"]))
    return ready


def _served(client: Any, headers: dict[str, str], pipeline: str) -> tuple[Layout | None, int | None]:
    """The layout and release the server serves for ``pipeline`` (None, None: nothing)."""
    names = model_names(pipeline)
    ready = _ready(client, headers)
    if ready.get(names["model"]):  # the ensemble layout: the inner models' versions are the releases
        return "ensemble", max(ready[names["model"]])
    if ready.get(names["ensemble"]):  # the fused layout: the public model's versions are the releases
        return "fused", max(ready[names["ensemble"]])
    return None, None


def _wait(client: Any, headers: dict[str, str], name: str, versions: set[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        ready = _ready(client, headers).get(name, set())
        if versions <= ready:
            return
        if time.monotonic() > deadline:
            raise ReleaseSwitchError(f"{name} versions {sorted(versions)} not ready within {timeout_s:.0f} s")
        time.sleep(0.1)  # readiness polling interval


def _restore(
    client: Any, headers: dict[str, str], repository: Path, pipeline: str, current: int, models: Sequence[str]
) -> None:
    """After a failed switch or load: ``current``'s configs back, and ``models`` reloaded from them (best effort;
    the served versions stay loaded anyway)."""
    activate(repository, pipeline, current)
    for name in models:
        try:
            client.load_model(name, headers=headers)
        except Exception:  # noqa: BLE001 - best effort; the served versions stay loaded anyway
            pass


def switch_release(
    url: str, admin_key: str, repository: Path, pipeline: str, to_version: int, timeout_s: float = 120.0
) -> SwitchResult:
    started = time.perf_counter()
    repository = Path(repository)
    registry = Registry(repository, pipeline)
    registry.release_files(to_version)  # 1. refuses a corrupt or incomplete release
    layout = registry.layout(to_version)
    *inner, public = registry.served_models(to_version)  # fused: no inner model; ensemble: preprocess, model
    versioned = inner or [public]  # the models whose versions are releases
    headers = {ADMIN_HEADER: admin_key}
    client = _client(url)
    result = SwitchResult(pipeline, None, to_version, 0.0)
    try:
        served_layout, current = _served(client, headers, pipeline)
        result.from_version = current
        if served_layout not in (None, layout):
            how = {"fused": "one fused model", "ensemble": "an ensemble"}
            raise ReleaseSwitchError(
                f"release {pipeline}:{to_version} is served as {how[layout]}, the served {pipeline}:{current} as "
                f"{how[served_layout]}: a running server does not switch between the two; restart it (`inferline "
                f"serve down`, then `up`) to serve the registry's current release. It still serves {pipeline}:{current}"
            )
        if current == to_version:
            result.steps.append("already served")
            return result
        try:
            if current is not None:  # 2. both releases loaded; the ensemble, if any, still on the served pair
                activate(repository, pipeline, current, also_load=[to_version])
                for name in versioned:
                    client.load_model(name, headers=headers)
                    _wait(client, headers, name, {current, to_version}, timeout_s)
                result.steps.append(f"loaded {pipeline}:{to_version} beside {pipeline}:{current}")
            elif not inner:  # nothing served yet: load the fused release
                activate(repository, pipeline, to_version)
                client.load_model(public, headers=headers)
                _wait(client, headers, public, {to_version}, timeout_s)
            if inner:  # 3. the ensemble now routes to the new pair
                activate(repository, pipeline, to_version, also_load=[current] if current is not None else [])
                client.load_model(public, headers=headers)
                _wait(client, headers, public, {1}, timeout_s)
                result.steps.append(f"ensemble routes to {pipeline}:{to_version}")
            # 4. only the new release stays loaded, from its own configs: a config Triton refuses fails here (the
            # fused layout loaded it beside the served one with the served release's config)
            activate(repository, pipeline, to_version)
            for name in versioned:
                client.load_model(name, headers=headers)
        except Exception as exc:  # any failure: put the served release's configs back (re-raised below)
            if current is not None:
                _restore(client, headers, repository, pipeline, current, (*inner, public))
            raise ReleaseSwitchError(
                f"switching {pipeline} from {current} to {to_version} failed ({type(exc).__name__}: {exc}); the "
                f"server still serves {pipeline}:{current}"
            ) from exc
        result.steps.append(f"unloaded {pipeline}:{current}" if current is not None else "loaded")
    finally:
        client.close()
    result.seconds = time.perf_counter() - started
    return result


def load_beside(
    url: str, admin_key: str, repository: Path, pipeline: str, candidate: int, timeout_s: float = 120.0
) -> int:
    """Load release ``candidate`` beside the release the server serves, both ready, for a rollout (the fused layout:
    two versions of ``<p>``, each a whole release; a request must then name its version, as the edge's router
    does). Returns the served release. Nothing changes on failure: ``ReleaseSwitchError`` says why."""
    repository = Path(repository)
    registry = Registry(repository, pipeline)
    registry.release_files(candidate)  # refuses a corrupt or incomplete release before the server is touched
    headers = {ADMIN_HEADER: admin_key}
    client = _client(url)
    try:
        layout, current = _served(client, headers, pipeline)
        if current is None:
            raise ReleaseSwitchError(f"the server at {url} serves no release of {pipeline}; start it first")
        if layout != "fused" or registry.layout(candidate) != "fused":
            raise ReleaseSwitchError(
                f"a rollout needs both releases served as one fused model each (`--target local`); {pipeline}:"
                f"{current} is served as {layout} and {pipeline}:{candidate} is published as "
                f"{registry.layout(candidate)}: promote with `inferline export promote` instead"
            )
        if candidate == current:
            raise ReleaseSwitchError(f"release {pipeline}:{candidate} is the one served; name another release")
        public = model_names(pipeline)["ensemble"]
        try:
            activate(repository, pipeline, current, also_load=[candidate])
            client.load_model(public, headers=headers)
            _wait(client, headers, public, {current, candidate}, timeout_s)
        except Exception as exc:  # put the served release's config back (re-raised below)
            _restore(client, headers, repository, pipeline, current, (public,))
            raise ReleaseSwitchError(
                f"loading {pipeline}:{candidate} beside {pipeline}:{current} failed ({type(exc).__name__}: {exc}); "
                f"the server still serves {pipeline}:{current} alone"
            ) from exc
        return current
    finally:
        client.close()


def keep_only(
    url: str, admin_key: str, repository: Path, pipeline: str, version: int, timeout_s: float = 120.0
) -> None:
    """The end of a rollout: release ``version`` alone stays loaded (Triton unloads the other once its requests in
    flight are answered). Call it only after no request is routed to the other version any more."""
    headers = {ADMIN_HEADER: admin_key}
    public = model_names(pipeline)["ensemble"]
    client = _client(url)
    try:
        activate(Path(repository), pipeline, version)
        client.load_model(public, headers=headers)
        _wait(client, headers, public, {version}, timeout_s)
    except Exception as exc:
        raise ReleaseSwitchError(
            f"unloading every release of {pipeline} but {version} failed ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        client.close()


def _pin_versions(text: str, versions: list[int], what: str) -> bytes:
    """``text`` (a release's config.pbtxt) with its specific version policy listing ``versions``."""
    config = text_format.Parse(text, ModelConfig())
    if config.version_policy.WhichOneof("policy_choice") != "specific":
        raise RegistryError(f"{what} config has no specific version policy")
    config.version_policy.specific.versions[:] = versions
    pinned: str = text_format.MessageToString(config)
    return pinned.encode()


def activate(repository: Path, pipeline: str, version: int, also_load: Sequence[int] = ()) -> None:
    """Point the model-level configs at ``version`` (copied from that release's own configs, atomically).

    ``also_load`` keeps other releases loaded beside it (a switch in progress). Fused layout: ``p``'s version policy
    lists them all (each version is a whole release). Ensemble layout: the inner models' version policy lists them,
    while the ensemble, pinned to ``version``'s pair, routes to ``version`` only."""
    names = model_names(pipeline)
    versions = sorted({version, *also_load})
    if Registry(repository, pipeline).layout(version) == "fused":
        release = repository / names["ensemble"] / str(version) / "release.config.pbtxt"
        pinned = _pin_versions(release.read_text(), versions, f"release {pipeline}:{version}'s")
        atomic_write_bytes(repository / names["ensemble"] / "config.pbtxt", pinned)
        return
    for key in ("preprocess", "model"):
        text = (repository / names[key] / str(version) / "release.config.pbtxt").read_text()
        pinned = _pin_versions(text, versions, f"release {pipeline}:{version}'s {key}")
        atomic_write_bytes(repository / names[key] / "config.pbtxt", pinned)
    ens = repository / names["preprocess"] / str(version) / "ensemble.config.pbtxt"
    atomic_write_bytes(repository / names["ensemble"] / "config.pbtxt", ens.read_bytes())
    (repository / names["ensemble"] / "1").mkdir(parents=True, exist_ok=True)


def set_current(
    repository: Path,
    pipeline: str,
    version: int | None = None,
    action: str = "promote",
    reason: str = "",
    quality: QualityVerdict | None = None,
) -> dict[str, Any]:
    """``promote`` to ``version`` or ``rollback`` to the previous release: moves configs and registry together.
    ``quality``: the promotion's comparison (``export.quality.QualityReport``), recorded in the history (an
    accepted worse release also as an ``accept_worse`` entry with its reason)."""
    registry = Registry(Path(repository), pipeline)
    with registry.locked() as reg:
        if action == "rollback":
            if reg["previous"] is None:
                raise RegistryError(
                    f"pipeline {pipeline!r} has no previous release to roll back to "
                    f"(current {reg['current']}, history {len(reg['history'])} entries)"
                )
            version = int(reg["previous"])
        if version is None:
            raise RegistryError("promote needs a version")
        if str(version) not in reg["releases"]:
            raise RegistryError(
                f"release {pipeline}:{version} does not exist; published: {sorted(map(int, reg['releases']))}"
            )
        activate(Path(repository), pipeline, version)
        extra: dict[str, Any] = {"quality": quality.headline()} if quality is not None else {}
        if quality is not None and quality.status == "accepted_worse" and reg["current"] != version:
            Registry.record(reg, "accept_worse", version, reason=quality.accepted_reason, **extra)
        Registry.move_pointer(reg, version, action, reason=reason, **extra)
        return dict(reg)
