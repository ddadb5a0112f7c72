"""The Dask batch job against real clusters (separate `dask scheduler`/`dask worker` processes, and the
LocalCluster of `inferline batch run`), real Parquet files and, for parity, the live Triton server."""

from __future__ import annotations

import numpy as np


def test_rows_a_model_raises_on_are_found_alone_and_the_search_is_bounded() -> None:
    """``isolate_rows`` (the batch scorer's and the served model's search): the rows that raise are found alone,
    every other row gets its own answer, and past ``max_failed`` failures (a partition refused anyway) the search
    stops instead of scoring a broken partition row by row."""
    from inferline.features.tensors import isolate_rows

    calls: list[tuple[int, int]] = []

    def run(lo: int, hi: int) -> list[np.ndarray]:
        calls.append((lo, hi))
        if any(i % 250 == 7 for i in range(lo, hi)):
            raise ValueError(f"rows {lo}:{hi}")
        return [np.arange(lo, hi, dtype=np.float32)[:, None] * 2]

    outputs, failed, errors = isolate_rows(run, 1_000)
    assert outputs is not None and sorted(errors) == [7, 257, 507, 757] == list(np.flatnonzero(failed))
    np.testing.assert_array_equal(outputs[0][~failed, 0], np.flatnonzero(~failed) * 2)
    assert not outputs[0][failed].any() and len(calls) < 4 * 2 * 10 + 1
    calls.clear()
    _, failed, errors = isolate_rows(run, 1_000, max_failed=1)
    assert failed[[7, 257]].all() and int(failed.sum()) > 2 and len(calls) < 30
