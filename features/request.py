"""The request path of the compiled feature contract: wire tensors -> ``(features, status)`` per request.

``RequestPath`` is the part of ``features.contract.Contract`` that serving runs per request: small requests (up
to ``SCALAR_ROWS`` rows) go row by row through each column's scalar lowering (no array overhead per call), larger
ones column by column through the vector lowering; tensor columns (``features.tensors``) add their reasons and
model inputs after. The contract compiles what these methods read (``Contract.__init__``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from inferline.features.column_plan import ColumnPlan, FeaturePlan
from inferline.features.spec import Column
from inferline.features.state import FeatureMatrix
from inferline.features.tensors import TensorPlan

__all__ = ["OK", "SCALAR_ROWS", "RequestPath"]

OK = "ok"
# requests of up to this many rows take the scalar path (measured: benchmarks/features_bench.py)
SCALAR_ROWS = 8


class RequestPath:
    """The contract's request path (``featurize``), over the plans ``Contract.__init__`` compiles."""

    input_columns: tuple[Column, ...]
    _tensors: list[TensorPlan]
    _inputs: list[ColumnPlan]
    _input_names: list[str]
    _numeric: list[FeaturePlan]
    _categorical: list[FeaturePlan]
    _by_source: dict[str, list[FeaturePlan]]
    _mean: np.ndarray
    _std: np.ndarray
    _row_cells: list[Callable[[Any], tuple[Any, ...]]]
    _numeric_at: list[tuple[int, int, float, float]]
    _categorical_at: list[tuple[int, int]]

    def featurize(self, arrays: Mapping[str, Any]) -> tuple[FeatureMatrix, np.ndarray]:
        """Wire tensors (one per raw input column, shape [n] or [n, 1]) -> ``(features, status)``. A row that
        breaks a rule gets its reason as status and neutral features (zeros, the unknown bucket), so it rides in
        the same batch as the others. A missing input raises ``KeyError`` naming it (a malformed request)."""
        names = self._input_names
        try:
            wire = [arrays[name] for name in names]
            dense = [np.asarray(arrays[p.name]) for p in self._tensors]
        except KeyError:
            everything = [c.name for c in self.input_columns]
            missing = [name for name in everything if name not in arrays]
            raise KeyError(
                f"request lacks input(s) {missing}; expected one tensor per raw column: {everything}"
            ) from None
        wire = [w if w.ndim == 1 else w.reshape(-1) for w in map(np.asarray, wire)]
        n = len(wire[0]) if wire else len(dense[0]) if dense else 0
        if not all(len(w) == n for w in (*wire, *dense)):
            rows = {c.name: len(arrays[c.name]) for c in self.input_columns}
            raise ValueError(f"request inputs hold different numbers of rows: {rows}; send one value per row in each")
        m, status = self._featurize_rows(wire, n) if n <= SCALAR_ROWS else self._featurize_vector(wire, n)
        if self._tensors:
            self._featurize_tensors(m, status, dense, n)
        return m, status

    def _featurize_tensors(self, m: FeatureMatrix, status: np.ndarray, dense: list[np.ndarray], n: int) -> None:
        """The tensor columns of a request: their reasons (for rows still ``ok``, in spec order) and inputs."""
        canonical = []
        for p, w in zip(self._tensors, dense, strict=True):
            values, found = p.canonical(w)
            found.update(p.rule_reasons(np, values, n) if not found else {})
            for reason, mask in found.items():
                for i in np.flatnonzero(mask).tolist():
                    if status[i] == OK:
                        status[i] = reason
            canonical.append(values)
        bad = status != OK
        for p, values in zip(self._tensors, canonical, strict=True):
            # a row the column's preprocess function raises on gets that reason; the rows beside it are scored
            m.tensors[p.name], failed = p.model_input_rows(np, values, bad)
            status[failed & ~bad] = p.reason["preprocess"]
        bad = status != OK
        if bad.any():
            m.numeric[bad] = 0.0
            m.categorical[bad] = 0

    def _featurize_vector(self, wire: list[np.ndarray], n: int) -> tuple[FeatureMatrix, np.ndarray]:
        """Column by column: numbers and timestamps through numpy, text value by value through the scalar
        lowering (with each categorical value's verdict and features remembered), first reasons only."""
        parse_first: list[str | None] | None = None
        rule_first: list[str | None] | None = None
        outputs: dict[str, Any] = {}
        for p, w in zip(self._inputs, wire, strict=True):
            parse, fail = p.request_column(w, n, self._by_source.get(p.name, ()), outputs)
            if parse is not None:
                parse_first = (
                    parse if parse_first is None else [a or b for a, b in zip(parse_first, parse, strict=True)]
                )
            if fail is not None:
                rule_first = fail if rule_first is None else [a or b for a, b in zip(rule_first, fail, strict=True)]
        if parse_first is None and rule_first is None:
            status = np.full(n, OK, dtype=object)
            bad = None
        else:
            first = parse_first or [None] * n
            second = rule_first or [None] * n
            status = np.array([a or b or OK for a, b in zip(first, second, strict=True)], dtype=object)
            bad = status != OK
        numeric = np.empty((n, len(self._numeric)), dtype=np.float64)
        for j, f in enumerate(self._numeric):
            numeric[:, j] = outputs[f.name]
        numeric = ((numeric - self._mean) / self._std).astype(np.float32)
        categorical = np.empty((n, len(self._categorical)), dtype=np.int64)
        for j, f in enumerate(self._categorical):
            categorical[:, j] = outputs[f.name]
        if bad is not None and bad.any():
            numeric[bad] = 0.0
            categorical[bad] = 0
        return FeatureMatrix(numeric=numeric, categorical=categorical), status

    def _featurize_rows(self, wire: list[np.ndarray], n: int) -> tuple[FeatureMatrix, np.ndarray]:
        """Row by row through each column's scalar lowering (``ColumnPlan.cell``): no array work per value."""
        numeric_at, categorical_at = self._numeric_at, self._categorical_at
        if n == 1:  # the commonest request: one value per column
            entries = [cell(w[0]) for cell, w in zip(self._row_cells, wire, strict=True)]
            reason = next((e[1] for e in entries if e[1] is not None), None) or next(
                (e[2] for e in entries if e[2] is not None), None
            )
            status = np.array([reason or OK], dtype=object)
            if reason is None:
                numeric = np.array([[(entries[j][k] - m) / s for j, k, m, s in numeric_at]], dtype=np.float32)
                categorical = np.array([[entries[j][k] for j, k in categorical_at]], dtype=np.int64)
            else:
                numeric = np.zeros((1, len(numeric_at)), dtype=np.float32)
                categorical = np.zeros((1, len(categorical_at)), dtype=np.int64)
            return FeatureMatrix(numeric=numeric, categorical=categorical), status
        columns = [[cell(v) for v in w] for cell, w in zip(self._row_cells, wire, strict=True)]
        if n > 1:
            for j, p in enumerate(self._inputs):
                if p.unique:
                    fail = p.duplicates([e[0] for e in columns[j]], None)
                    if fail is not None:
                        columns[j] = [
                            e if r is None or e[2] else (e[0], e[1], r, *e[3:])
                            for e, r in zip(columns[j], fail, strict=True)
                        ]
        zeros_n = [0.0] * len(numeric_at)
        zeros_c = [0] * len(categorical_at)
        numeric_rows: list[list[float]] = []
        categorical_rows: list[list[int]] = []
        status = np.empty(n, dtype=object)
        for i in range(n):
            entries = [c[i] for c in columns]
            reason = None
            for e in entries:
                if e[1] is not None:
                    reason = e[1]
                    break
            else:
                for e in entries:
                    if e[2] is not None:
                        reason = e[2]
                        break
            if reason is None:
                status[i] = OK
                numeric_rows.append([(entries[j][k] - m) / s for j, k, m, s in numeric_at])
                categorical_rows.append([entries[j][k] for j, k in categorical_at])
            else:
                status[i] = reason
                numeric_rows.append(zeros_n)
                categorical_rows.append(zeros_c)
        numeric = np.array(numeric_rows, dtype=np.float32).reshape(n, len(numeric_at))
        categorical = np.array(categorical_rows, dtype=np.int64).reshape(n, len(categorical_at))
        return FeatureMatrix(numeric=numeric, categorical=categorical), status
