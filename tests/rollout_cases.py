"""For the rollout tests: callers (threads sending rows of any pipeline through the edge, HTTP with binary tensors and
gRPC, until stopped, counting the requests each release answered and every failed request) and ``inferline
rollout`` itself."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from inferline.features.wire import encode_rows

__all__ = ["Load", "rollout"]

ROWS = 8  # per request
POOL = 4_000  # distinct rows each caller sends in turn


@dataclass
class Load:
    """``protocols``: one caller thread each ("http" or "grpc"), to the edges at ``http`` and ``grpc``, sending
    rows of ``pipeline`` (a pipeline module: its SPEC and generate)."""

    pipeline: ModuleType
    http: str
    grpc: str
    protocols: tuple[str, ...] = ("http", "http", "grpc")
    headers: dict[str, str] | None = None  # sent with every request (a sticky key)
    answered: dict[str, int] = field(default_factory=dict)  # release -> requests it answered
    by_protocol: dict[str, int] = field(default_factory=dict)  # "http" | "grpc" -> requests answered
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, protocol: str, seed: int) -> None:
        spec = self.pipeline.SPEC
        frame = self.pipeline.generate(POOL, seed=seed).drop(columns=[spec.label])
        arrays = encode_rows(frame, spec)
        module = httpclient if protocol == "http" else grpcclient
        client = module.InferenceServerClient(self.http if protocol == "http" else self.grpc)
        i = 0
        try:
            while not self.stop.is_set():
                start = i % (POOL - ROWS)
                i += ROWS
                inputs = []
                for c in spec.input_columns:
                    values = arrays[c.name][start : start + ROWS]
                    tensor = module.InferInput(c.name, list(values.shape), c.triton_dtype)
                    tensor.set_data_from_numpy(values, **({"binary_data": True} if module is httpclient else {}))
                    inputs.append(tensor)
                try:
                    result = client.infer(spec.name, inputs, headers=self.headers)
                except Exception as exc:  # noqa: BLE001 - every failure is counted, whatever it is
                    with self.lock:
                        self.failures.append(f"{protocol}: {exc}")
                    continue
                release = result.as_numpy("release").reshape(-1)[0].decode()
                with self.lock:
                    self.answered[release] = self.answered.get(release, 0) + 1
                    self.by_protocol[protocol] = self.by_protocol.get(protocol, 0) + 1
        finally:
            client.close()

    def recovered(self, more: int = 20) -> Callable[[], bool]:
        """A predicate: true once every protocol has answered ``more`` requests beyond what it had answered now."""
        now = dict(self.by_protocol)
        return lambda: all(self.by_protocol.get(p, 0) >= now.get(p, 0) + more for p in set(self.protocols))

    def __enter__(self) -> Load:
        for k, protocol in enumerate(self.protocols):
            t = threading.Thread(target=self._run, args=(protocol, 100 + k), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def rollout(workdir: Path, *args: str, in_process: bool = True) -> subprocess.CompletedProcess[str]:
    """``inferline rollout ARGS --workdir WORKDIR``: in this process by default (the command's own ``main``, its
    output captured; seconds of interpreter start saved per call), or as a user runs it (``in_process=False``)."""
    argv = [*args, "--workdir", str(workdir)]
    if not in_process:
        command = [sys.executable, "-m", "inferline", "rollout", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)
    from inferline.monitor import rollout_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = rollout_cli.main(argv)
        except SystemExit as exc:  # a usage error
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(["inferline", "rollout", *argv], code, out.getvalue(), err.getvalue())
