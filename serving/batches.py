"""How inferline's Triton Python-backend models answer a dynamic batch: one call for every request, and, when that
call fails, each request alone, so that one unreadable request gets its error and the requests beside it are
still answered. Used by ``serving/backend/fused.py`` (local target) and ``serving/backend/preprocess.py`` (gpu).

Within a request a bad row costs only itself: validation gives it its reason as ``status`` (features.contract),
and ``run_model`` scores the batch so that rows the model raises on (onnxruntime refusing an input it cannot
take) are found alone and answered with ``model:failed`` (or the reason they already had) and zeros, while the
rows beside them are scored. The batch job (batch.partition) quarantines such rows with the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from inferline.features.contract import TensorSpec
from inferline.features.tensors import isolate_rows, numpy_dtype

__all__ = ["MODEL_FAILED", "answer_batch", "blank_outputs", "read_inputs", "run_model"]

MODEL_FAILED = "model:failed"  # the reason of a valid row the model raised on, alone
log = logging.getLogger(__name__)


def blank_outputs(outputs: Sequence[TensorSpec], n: int) -> list[np.ndarray]:
    """Zeros for ``n`` rows of each model output (``[n, *dims]`` in its dtype): the answer of rows not scored."""
    return [np.zeros((n, *o.dims), dtype=numpy_dtype(o.datatype)) for o in outputs]


def run_model(
    run: Callable[[Mapping[str, Any]], Sequence[np.ndarray]],
    feeds: Mapping[str, Any],
    status: np.ndarray,
    outputs: Sequence[TensorSpec],
    what: str = "the model",
) -> list[np.ndarray]:
    """The model's outputs for every row of ``feeds``: one ``run`` when it succeeds; when it raises, halves
    again down to single rows (``features.tensors.isolate_rows``). A row the model raises on alone answers
    zeros, and its ``status`` (updated in place) becomes ``MODEL_FAILED`` unless it already had a reason; the
    first error is logged once per call that has such a valid row."""
    n = len(status)
    scored, failed, errors = isolate_rows(lambda lo, hi: run({k: v[lo:hi] for k, v in feeds.items()}), n)
    if failed.any():
        fresh = failed & (status == "ok")
        if fresh.any():
            error = errors[int(np.flatnonzero(fresh)[0])]
            status[fresh] = MODEL_FAILED
            log.warning(
                "%s raised on %d of %d valid rows (answered %r): %s: %s",
                what, int(fresh.sum()), n, MODEL_FAILED, type(error).__name__, error,
            )  # fmt: skip
    return list(scored) if scored is not None else blank_outputs(outputs, n)


def read_inputs(
    requests: Sequence[Any],
    columns: Sequence[str],
    tensor_by_name: Callable[[Any, str], Any],
    tensors: Collection[str] = (),
) -> list[dict[str, np.ndarray]]:
    """Each request's raw columns, flattened to one value per row, except ``tensors`` (tensor columns, kept as
    [n, *shape]). A column the request lacks is left out: scoring names it."""
    per_request = []
    for request in requests:
        arrays = {}
        for name in columns:
            tensor = tensor_by_name(request, name)
            if tensor is not None:
                arrays[name] = tensor.as_numpy() if name in tensors else tensor.as_numpy().reshape(-1)
        per_request.append(arrays)
    return per_request


def answer_batch(
    per_request: Sequence[Mapping[str, np.ndarray]],
    columns: Sequence[str],
    score: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
    respond: Callable[[list[np.ndarray]], Any],
    fail: Callable[[Exception], Any],
) -> list[Any]:
    """One ``score`` over every request's rows, split back into one ``respond`` per request; if that raises, each
    request is scored alone and a request that still fails gets ``fail(exception)``."""
    sizes = [len(next(iter(a.values()))) if a else 0 for a in per_request]
    try:  # the common case: the whole batch at once
        merged = {name: np.concatenate([a[name] for a in per_request]) for name in columns}
        outputs = score(merged)
        bounds = np.cumsum([0, *sizes])
        return [respond([o[bounds[i] : bounds[i + 1]] for o in outputs]) for i in range(len(per_request))]
    except Exception:  # noqa: BLE001 - isolate the failing request; the others are still answered
        responses = []
        for arrays in per_request:
            try:
                responses.append(respond(score(arrays)))
            except Exception as exc:  # noqa: BLE001
                responses.append(fail(exc))
        return responses
