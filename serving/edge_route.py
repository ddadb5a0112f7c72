"""The edge's router: which release answers a request, and which one also gets a copy, while a pipeline is rolled out
(``release.rollout``: shadow or canary).

The router keeps, per pipeline of the served repository, the release the registry calls current and the rollout
file's routing. A background task re-reads both when their files change (``poll_s``, default 0.1 s: a stat per
file), and acknowledges each rollout generation it applies (``release.rollout.write_ack``): the monitor moves the
server's loaded versions only after that acknowledgement, so no request is sent to a version being unloaded.

Per request (``choose``, O(1), no I/O, no lock):

- no rollout routed, or the caller named a version itself: the request goes where it was addressed (None);
- canary at share s: the candidate answers when ``u < s``, where u is the caller's key hashed to [0, 1) (CRC-32 of
  the header the rollout names, so a caller keeps its release across requests, processes and steps: a key under
  5 % is still under 25 %) or a uniform draw when the request carries no key; else the current release answers.
  Both are addressed by version (``/v2/models/<p>/versions/<N>/infer``): with two versions loaded, Triton would send
  an unversioned request to the highest one;
- shadow at share s: the current release answers every request; with probability s the edge also sends it to the
  candidate after answering, off the request path (``Gateway``), and hands both answers to the monitor as a pair.

Each answer still names its release in the ``release`` output. Metrics (prometheus-client, in the supervisor's
registry): ``inferline_edge_release_requests_total{model,release,outcome}`` for every inference routed through the
edge, ``inferline_edge_release_latency_seconds{model,release}`` (a histogram: percentiles aggregate across edges),
``inferline_edge_shadow_requests_total{model,release,outcome}``, and ``inferline_edge_rollout_share{model,mode}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inferline.release.rollout import Rollout, RolloutError, read_rollout, write_ack

__all__ = ["Choice", "Router"]

log = logging.getLogger("inferline.serving.edge_route")

_SCALE = float(2**32)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096)


@dataclass(frozen=True)
class Choice:
    """Where one request goes: ``version`` answers it; ``shadow``, when set, gets a copy afterwards; ``release``
    names the answering release for the metrics; ``candidate`` whether the candidate answers."""

    version: str
    release: str
    candidate: bool
    shadow: str | None = None
    sample_rate: float | None = None  # this answer's sampling rate for the monitor (None: the sampler's own)


@dataclass(frozen=True)
class _Route:
    mode: str
    current: str
    candidate: str
    share: float
    header: str | None
    baseline_rate: float  # the current release's answers are sampled at share/(1-share): both arms alike


class Router:
    def __init__(self, repository: Path | None, registry: CollectorRegistry, poll_s: float = 0.1) -> None:
        self.repository = Path(repository) if repository is not None else None
        self.poll_s = poll_s
        self.routes: dict[str, _Route] = {}  # pipelines being rolled out, by name
        self.current: dict[str, str] = {}  # pipeline -> "p:N", the registry's current release (a metrics label)
        # the release labels the metrics take: registry currents and rollout releases (a caller naming any version
        # must not add label sets without bound)
        self.known: set[str] = set()
        self._seen: dict[Path, tuple[int, int, int]] = {}  # file -> (mtime_ns, inode, size) when last read
        self._random = random.random
        self._task: asyncio.Task[None] | None = None
        self.requests = Counter(
            "inferline_edge_release_requests",
            "Inferences answered through the edge, by model, the release that answered and outcome (ok, error)",
            ["model", "release", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "inferline_edge_release_latency_seconds",
            "Seconds from an inference's arrival at the edge to the model server's answer, by release",
            ["model", "release"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadows = Counter(
            "inferline_edge_shadow_requests",
            "Copies of requests sent to a shadow release off the request path, by outcome (ok, error, dropped)",
            ["model", "release", "outcome"],
            registry=registry,
        )
        self.share = Gauge(
            "inferline_edge_rollout_share",
            "The candidate's share of a pipeline's requests at this edge (canary: answered; shadow: copied)",
            ["model", "mode"],
            registry=registry,
        )

    # ---- the request path ----
    def choose(self, model: str, version: str | None, key: str | None) -> Choice | None:
        """Where a request for ``model`` goes (None: where it was addressed); ``key``: the sticky header's value."""
        route = self.routes.get(model)
        if route is None or version:
            return None
        if route.mode == "shadow":
            copy = route.candidate if route.share > 0 and self._random() < route.share else None
            return Choice(route.current, f"{model}:{route.current}", False, copy)
        u = zlib.crc32(key.encode()) / _SCALE if key else self._random()
        if u < route.share:
            return Choice(route.candidate, f"{model}:{route.candidate}", True, None, 1.0)
        return Choice(route.current, f"{model}:{route.current}", False, None, route.baseline_rate)

    def header(self, model: str) -> str | None:
        """The header whose value keys a sticky split of ``model`` (None: random)."""
        route = self.routes.get(model)
        return route.header if route is not None else None

    def release_of(self, model: str, choice: Choice | None) -> str:
        """The release label of an answer: the routed one, else the registry's current (``model`` when unknown)."""
        if choice is not None:
            return choice.release
        return self.current.get(model, model)

    def observe(self, model: str, release: str, ok: bool, seconds: float) -> None:
        self.requests.labels(model, release, "ok" if ok else "error").inc()
        self.latency.labels(model, release).observe(seconds)

    # ---- the background task ----
    def refresh(self) -> None:
        """Re-read the registries and rollout files that changed since the last look."""
        if self.repository is None:
            return
        try:
            entries = list(os.scandir(self.repository))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if not (name.endswith(".rollout.json") or name.endswith(".registry.json")):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            # the inode too: two atomic writes within one tick of the kernel's coarse clock share an mtime, never
            # an inode (the new file is created while the one it replaces still exists)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            path = Path(entry.path)
            if self._seen.get(path) == stamp:
                continue
            self._seen[path] = stamp
            if name.endswith(".registry.json"):
                self._read_registry(path, name.removesuffix(".registry.json"))
            else:
                self._read_rollout(name.removesuffix(".rollout.json"))

    def _read_registry(self, path: Path, pipeline: str) -> None:
        import json

        try:
            current = json.loads(path.read_text()).get("current")
        except (OSError, ValueError, AttributeError):
            return
        if current is not None:
            self.current[pipeline] = f"{pipeline}:{current}"
            self.known.add(f"{pipeline}:{current}")

    def _read_rollout(self, pipeline: str) -> None:
        assert self.repository is not None
        try:
            rollout = read_rollout(self.repository, pipeline)
        except (OSError, RolloutError) as exc:
            log.warning("rollout of %s not read (%s); routing unchanged", pipeline, exc)
            return
        if rollout is None:
            return
        self._apply(rollout)
        try:
            write_ack(self.repository, pipeline, rollout.id, rollout.generation)
        except OSError as exc:
            log.warning("rollout of %s: acknowledgement not written (%s)", pipeline, exc)

    def _apply(self, rollout: Rollout) -> None:
        p = rollout.pipeline
        if rollout.routed:
            share = rollout.share
            self.routes[p] = _Route(
                rollout.mode,
                str(rollout.answering),
                str(rollout.candidate),
                share,
                rollout.sticky_header.lower() if rollout.sticky_header else None,
                1.0 if share >= 0.5 else share / (1.0 - share),
            )
            self.known.update((f"{p}:{rollout.current}", f"{p}:{rollout.candidate}"))
            self.share.labels(p, rollout.mode).set(rollout.share)
        else:
            self.routes.pop(p, None)
            self.share.labels(p, rollout.mode).set(0.0)
        log.info("rollout %s of %s: %s, share %.3f (generation %d)", rollout.id, p, rollout.phase, rollout.share,
                 rollout.generation)  # fmt: skip

    async def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # a bad file must never stop routing updates
                log.exception("router refresh failed")
            await asyncio.sleep(self.poll_s)  # file polling interval (a stat per file)

    def start(self) -> None:
        self.refresh()
        if self.repository is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
