"""Fixtures and hooks both test tiers share, none of which starts a process: the GPU skip, torch's thread count, a
trained fraud run (in-process training on generated Parquet files) and a webhook receiver on 127.0.0.1 (a thread of
this process). The fixtures that start servers and clusters are in tests/system/conftest.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from inferline.core.files import atomic_write_parquet
from inferline.features.backend import gpu_available
from inferline.features.pipelines import fraud
from inferline.training.train import RunResult, train


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with cuDF/cupy (pip install 'inferline[gpu]')")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("raw")
    paths = []
    for i in range(2):
        path = root / f"fraud-{i:04d}.parquet"
        atomic_write_parquet(path, fraud.generate(15_000, seed=100 + i))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def run(raw_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return train(raw_files, fraud.SPEC, tmp_path_factory.mktemp("runs"), seed=0, epochs=3, progress=False)


@pytest.fixture(scope="session")
def holdout(run: RunResult) -> pd.DataFrame:
    return pd.read_parquet(run.run_dir / "holdout.parquet")


@dataclass
class Receiver:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()
            box.arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
