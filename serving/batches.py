"""How inferline's Triton Python-backend models answer a dynamic batch: one call for every request, and, when that
call fails, each request alone, so that one unreadable request gets its error and the requests beside it are
still answered. Used by ``serving/backend/fused.py`` (local target) and ``serving/backend/preprocess.py`` (gpu).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["answer_batch", "read_inputs"]


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
