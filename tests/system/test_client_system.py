"""The client's failure behaviour against a real socket with nothing listening (no mock)."""

from __future__ import annotations

import pytest

from inferline.core.processes import free_port
from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient
from inferline.serving.server import TritonServer


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_endpoint_that_refuses_is_set_aside_and_the_other_answers(protocol: str, triton: TritonServer) -> None:
    """Two endpoints, the first with nothing listening: its first refusal sets it aside and the request goes to
    the second; every later request goes to the second while the first is set aside."""
    dead = f"127.0.0.1:{free_port()}"
    live = triton.config.http_url if protocol == "http" else triton.config.grpc_url
    rows = fraud.generate(120, seed=3).drop(columns=[fraud.SPEC.label])
    with InferlineClient(
        [dead, live],
        protocol,  # type: ignore[arg-type]
        pipeline="fraud",
        max_batch_size=20,
        endpoint_cooldown_s=60,
    ) as client:
        got = client.predict(rows)
        assert client.is_ready()  # some endpoint is
    assert got.ok.all() and got.served_by == [live] * len(rows)
