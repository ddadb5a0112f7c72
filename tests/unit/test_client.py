"""The client's failure behaviour against a real socket with nothing listening (no mock)."""

from __future__ import annotations

import time

import pytest

from inferline.core.processes import free_port
from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient, InferlineError


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
