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


def test_serve_predict_answers_a_refused_row_with_nulls() -> None:
    """``serve predict`` prints a refused row's status and no probabilities (the model's answer on its stand-in
    zeros means nothing); an ``ok`` row its probabilities and class. Found with the image tutorial, where a photo
    of the wrong shape printed ``"probabilities": [0.0, 1.0, 0.0]`` beside ``"status": "image:shape"``."""
    import numpy as np

    from inferline.serving.client import Predictions
    from inferline.serving.remote import answers

    rows = fraud.generate(2, seed=0)
    p = Predictions(
        probabilities=np.array([[0.25, 0.75], [0.0, 1.0]], dtype=np.float32),
        predicted_class=np.array([1, 1]),
        status=["ok", "amount:negative"],
        release=["fraud:1", "fraud:1"],
    )
    ok, refused = answers(p, fraud.SPEC, rows)
    assert ok["probabilities"] == [0.25, 0.75] and ok["predicted_class"] == fraud.SPEC.classes[1]
    assert refused["probabilities"] is None and refused["predicted_class"] is None
    assert refused["status"] == "amount:negative" and refused["transaction_id"] == rows["transaction_id"].iloc[1]


def test_rows_are_grouped_by_the_shapes_of_their_variable_tensors() -> None:
    """``shape_groups``: positions of rows whose variable-length tensors share a shape, in order of first
    appearance; the rows the wire refuses (no tokens, the wrong rank) one more group, answered with their reasons;
    a spec without a variable dimension is one group."""
    import pandas as pd

    from inferline.features.wire import shape_groups
    from tests.pipelines import byom_images, byom_text

    tokens = [[1, 2, 3], [4, 5], [6, 7, 8], None, [[1, 2]], [9, 9]]
    rows = pd.DataFrame({"doc_id": list("abcdef"), "tokens": tokens, "mask": [[1] * 3] * 6})
    groups = [g.tolist() for g in shape_groups(rows, byom_text.SPEC)]
    assert groups == [[0, 2], [1, 5], [3, 4]]
    images = byom_images.generate(3, seed=0)
    assert [g.tolist() for g in shape_groups(images, byom_images.SPEC)] == [[0, 1, 2]]
