"""The client's failure behaviour against a real socket with nothing listening (no mock)."""

from __future__ import annotations

import time

import pytest

from inferline.core.processes import free_port
from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient, InferlineError
from inferline.serving.server import TritonServer


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_is_retried_then_reported(protocol: str) -> None:
    url = f"127.0.0.1:{free_port()}"
    rows = fraud.generate(3, seed=0)
    client = InferlineClient(url, protocol, pipeline="fraud", timeout_s=5.0, retries=2, backoff_s=0.05)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(InferlineError, match=r"failed after 3 attempt\(s\)") as info:
        client.predict(rows)
    assert info.value.retryable
    assert url in str(info.value) and "'fraud'" in str(info.value)
    assert time.monotonic() - started < 5.0, "retries stay within the deadline"
    assert not client.is_ready()


def test_rows_missing_a_column_are_refused_before_sending() -> None:
    client = InferlineClient(f"127.0.0.1:{free_port()}", "http", pipeline="fraud")
    rows = fraud.generate(2, seed=0).drop(columns=["amount"])
    with pytest.raises(ValueError, match=r"rows lack column\(s\) \['amount'\]"):
        client.predict(rows)


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
