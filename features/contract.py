"""The compiled feature contract: a pipeline spec and its fitted state, lowered once, used by every stage.

``compile_contract(spec, state)`` returns a ``Contract``. It holds, built from the same declarative rules
(``features.rules``) and kernels (``features.kernels``):

- ``schema()``: the pandera schema of the raw data (built-in pandera checks where pandera has them);
- ``reasons(columns)``: the vectorized evaluator, ``{reason: mask}`` over canonical arrays (numpy, or cupy for
  numbers and timestamps), with every rule's parameters bound at compile time;
- ``featurize(arrays)``: the request path (``features.request``), wire tensors -> ``(features, status)``; small
  requests go row by row through the scalar lowering (no array overhead per call), larger ones through the vector
  lowering;
- ``features(frame)``: model inputs for a pandas/cuDF frame or canonical columns (training, batch, parity);
- ``validate(frame)``: a data set's validation: pandera checks the structure (columns, dtypes), the vector evaluator
  the rows, every failing row quarantined with all its reasons;
- ``inputs`` / ``model_inputs``: the tensor names, datatypes and shapes that configs, runners and clients use.

Reasons are ``<column>:<code>``: ``null``, ``duplicate``, a rule's name, or a parse failure (``invalid_utf8``,
``unparseable``, ``naive_timestamp``, ``epoch_number``; in files also a number cell's ``not_a_number``,
``non_ascii_digits``, ``beyond_float64``, ``beyond_int64``, ``not_integer``: ``features.normalize``). Copies of a
unique text value are found by look-alike key (``vocabulary.lookalike_key``) on every path. A row's status is its first
reason (parse failures first, then column by column in spec order), or ``ok``. The contract checks
(``features.checks``: ``inferline check``; tests/unit/test_contract.py runs them on every pipeline) prove that every
lowering agrees. Each column's compiled checks and both their lowerings are ``features.column_plan``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from inferline.features.backend import array_namespace
from inferline.features.column_plan import ColumnPlan, FeaturePlan, factorize_text, to_host
from inferline.features.kernels import NAT, resolve_kernel
from inferline.features.request import RequestPath
from inferline.features.spec import Column, PipelineSpec, SpecError
from inferline.features.state import FeatureMatrix, FeatureState
from inferline.features.tensors import TensorPlan
from inferline.features.vocabulary import TEXT_KINDS, lookalike_keys

__all__ = ["Contract", "TensorSpec", "compile_contract", "model_outputs"]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as Triton declares it: name, datatype (``FP32``, ``INT64``, ``BYTES``...) and dims per row."""

    name: str
    datatype: str
    dims: tuple[int, ...]


def model_outputs(spec: PipelineSpec) -> tuple[TensorSpec, ...]:
    """What the scoring model answers per row: class ``probabilities`` and the ``predicted_class`` for a
    classifier (the decision threshold applies to binary tasks only; more classes take the argmax), one
    ``prediction`` for regression."""
    if spec.task == "regression":
        return (TensorSpec("prediction", "FP32", (1,)),)
    return (
        TensorSpec("probabilities", "FP32", (len(spec.classes),)),
        TensorSpec("predicted_class", "INT64", (1,)),
    )


class Contract(RequestPath):
    """A spec and its fitted state, compiled. Cheap to call, not free to build: build one per loaded model (it
    remembers categorical verdicts, so it is owned, never shared between models). ``state`` may be None for a
    contract that only validates (before training has fitted one)."""

    def __init__(self, spec: PipelineSpec, state: FeatureState | None = None) -> None:
        if state is not None:
            state.check(spec)
        self.spec = spec
        self.state = state
        self.input_columns = spec.input_columns
        self._plans = {c.name: ColumnPlan(c) for c in spec.columns if c.kind != "tensor"}
        self._tensors = [TensorPlan(c) for c in spec.tensor_columns]
        # text columns whose copies are found by look-alike key (``vocabulary.lookalike_key``) on every path
        self.lookalike_columns = frozenset(name for name, plan in self._plans.items() if plan.fold)
        self._inputs = [self._plans[c.name] for c in self.input_columns if c.kind != "tensor"]
        self._input_names = [p.name for p in self._inputs]
        self._schemas: dict[bool, Any] = {}
        self.inputs = tuple(
            TensorSpec(c.name, c.triton_dtype, tuple(c.shape) if c.kind == "tensor" else (1,))
            for c in self.input_columns
        )
        self._numeric: list[FeaturePlan] = []
        self._categorical: list[FeaturePlan] = []
        for f in spec.features:
            kernel = resolve_kernel(f.kernel)
            if spec.column(f.source).kind not in kernel.kinds:
                raise SpecError(
                    f"feature {f.name!r}: kernel {f.kernel!r} reads {sorted(kernel.kinds)} columns, but {f.source!r} "
                    f"is {spec.column(f.source).kind}"
                )
            if kernel.output != f.output:
                raise SpecError(
                    f"feature {f.name!r}: kernel {f.kernel!r} gives a {kernel.output} feature, declared {f.output}"
                )
            params: dict[str, Any] = dict(f.params)
            if kernel.output == "categorical":
                vocabulary = state.vocabularies[f.name] if state is not None else []
                params["lookup"] = {v: i + 1 for i, v in enumerate(vocabulary)}
            plan = FeaturePlan(f.name, f.source, kernel, params)
            (self._categorical if f.output == "categorical" else self._numeric).append(plan)
        self._by_source: dict[str, list[FeaturePlan]] = {}
        for plan in (*self._numeric, *self._categorical):
            self._by_source.setdefault(plan.source, []).append(plan)
        # the tensors every stage agrees on: raw inputs (one per column), the model's inputs (``numeric`` and
        # ``categorical`` when the spec has such features, then each tensor column), the served outputs
        self.model_inputs = tuple(
            [TensorSpec("numeric", "FP32", (len(self._numeric),))] * bool(self._numeric)
            + [TensorSpec("categorical", "INT64", (len(self._categorical),))] * bool(self._categorical)
            + [TensorSpec(c.name, c.input_dtype, tuple(c.shape)) for c in spec.tensor_columns]
        )
        self.outputs = (*model_outputs(spec), TensorSpec("status", "BYTES", (1,)), TensorSpec("release", "BYTES", (1,)))
        mean = state.mean if state is not None else [0.0] * len(self._numeric)
        std = state.std if state is not None else [1.0] * len(self._numeric)
        self._mean = np.asarray(mean, dtype=np.float64)
        self._std = np.asarray(std, dtype=np.float64)
        self._row_cells = [p.cell(self._by_source.get(p.name, ())) for p in self._inputs]
        position = {
            f.name: (j, 3 + k)
            for j, p in enumerate(self._inputs)
            for k, f in enumerate(self._by_source.get(p.name, ()))
        }
        unreachable = [f.name for f in (*self._numeric, *self._categorical) if f.name not in position]
        if unreachable:
            raise SpecError(f"features {unreachable} read the label column; features must come from input columns")
        self._numeric_at = [
            (*position[f.name], m, s)
            for f, m, s in zip(self._numeric, self._mean.tolist(), self._std.tolist(), strict=True)
        ]
        self._categorical_at = [position[f.name] for f in self._categorical]

    # ------------------------------------------------------------------------------------------ schema
    def schema(self, include_label: bool = True) -> Any:
        """The pandera schema: exact dtypes (no coercion), nullability, every rule as a check, uniqueness."""
        if include_label not in self._schemas:
            import pandera.pandas as pa

            folds = self.lookalike_columns
            columns = {
                c.name: pa.Column(
                    c.raw_dtype,
                    # a tensor column's rules run per element (features.tensors), not as pandera checks
                    checks=[] if c.kind == "tensor" else [*(r.pandera() for r in c.rules), *_copies_check(c, folds)],
                    nullable=not c.required,
                    unique=c.unique and c.name not in folds,  # look-alike copies: checked on their keys instead
                    # the column's duplicate policy: every copy, or every copy after the first
                    report_duplicates="exclude_first" if c.duplicates == "all_but_first" else "all",
                    coerce=False,
                    required=True,
                )
                for c in self._columns(include_label)
            }
            self._schemas[include_label] = pa.DataFrameSchema(
                columns, strict=True, coerce=False, name=f"{self.spec.name}_v{self.spec.version}"
            )
        return self._schemas[include_label]

    def structure_schema(self, include_label: bool = True) -> Any:
        """The schema's structure alone (columns, dtypes, strictness): what pandera checks before our evaluator."""
        key = ("structure", include_label)
        if key not in self._schemas:
            import pandera.pandas as pa

            columns = {
                c.name: pa.Column(c.raw_dtype, nullable=True, coerce=False, required=True)
                for c in self._columns(include_label)
            }
            self._schemas[key] = pa.DataFrameSchema(columns, strict=True, coerce=False)  # type: ignore[index]
        return self._schemas[key]  # type: ignore[index]

    def _columns(self, include_label: bool) -> tuple[Column, ...]:
        return self.spec.columns if include_label else self.input_columns

    # ------------------------------------------------------------------------------------------ canonical columns
    def columns_of(self, frame: Any, include_label: bool = False, xp: ModuleType = np) -> dict[str, Any]:
        """A pandas or cuDF frame (raw dtypes), or a mapping of canonical arrays, -> canonical arrays."""
        if isinstance(frame, Mapping):
            return {c.name: frame[c.name] for c in self._columns(include_label) if c.name in frame}
        out: dict[str, Any] = {}
        gpu = type(frame).__module__.startswith("cudf")
        for c in self._columns(include_label):
            if c.name not in frame.columns:
                continue
            s = frame[c.name]
            if c.kind == "tensor":  # one value per row (features.tensors makes it dense)
                out[c.name] = s.to_arrow().to_pylist() if gpu else s.to_numpy(dtype=object)
                continue
            kind = self._plans[c.name].kind
            if gpu:
                out[c.name] = _cudf_canonical(s, kind)
            elif kind in TEXT_KINDS:
                out[c.name] = s.to_numpy(dtype=object, na_value=None)
            elif kind == "timestamp":
                out[c.name] = _timestamp_ns(s)
            elif kind == "numeric":
                out[c.name] = s.to_numpy(dtype="float64", na_value=np.nan)
            else:
                out[c.name] = s.to_numpy(dtype="int64")
            if xp is not np and kind not in TEXT_KINDS:
                out[c.name] = xp.asarray(out[c.name])
        return out

    # ------------------------------------------------------------------------------------------ vector lowering
    def reasons(self, columns: Mapping[str, Any], include_label: bool = False, xp: ModuleType = np) -> dict[str, Any]:
        """``{reason: mask}`` over canonical arrays, column by column in spec order."""
        out: dict[str, Any] = {}
        tensors = {p.name: p for p in self._tensors}
        for c in self._columns(include_label):
            if c.name not in columns:
                continue
            if c.name in tensors:
                out.update(tensors[c.name].reasons(xp, columns[c.name]))
            else:
                self._plans[c.name].vector_reasons(xp, columns[c.name], out)
        return out

    def features(self, frame: Any, xp: ModuleType | None = None) -> FeatureMatrix:
        """Model inputs for every row of a frame (pandas or cuDF) or canonical columns, on the frame's backend."""
        if xp is None:
            xp = array_namespace(frame)
        columns = self.columns_of(frame, xp=xp)
        n = _length(columns)
        return self._features(columns, n, xp)

    def raw_numeric(self, frame: Any, xp: ModuleType | None = None) -> Any:
        """The numeric features before standardization (float64 [n, k]): what ``fit_state`` fits statistics on."""
        xp = array_namespace(frame) if xp is None else xp
        columns = self.columns_of(frame, xp=xp)
        return self._raw_numeric(columns, _length(columns), xp)

    def _kernel(self, plan: FeaturePlan, columns: Mapping[str, Any], xp: ModuleType, distinct: dict[str, Any]) -> Any:
        """One feature over a data set. Kernels are per value, so a text column's kernel runs over its distinct
        values only (pandas' factorize, one C hash pass; shared by the column's features) and is gathered back."""
        values = columns[plan.source]
        if self._plans[plan.source].kind not in TEXT_KINDS or len(values) < 64:
            return plan.kernel.vector(xp, values, plan.params)
        if plan.source not in distinct:
            codes, uniques = factorize_text(values)
            distinct[plan.source] = (codes, [*uniques.tolist(), None])  # code -1 (null) reads the appended None
        codes, uniques = distinct[plan.source]
        per_value = to_host(plan.kernel.vector(np, np.array(uniques, dtype=object), plan.params))
        return xp.asarray(per_value[codes])

    def _raw_numeric(
        self, columns: Mapping[str, Any], n: int, xp: ModuleType, distinct: dict[str, Any] | None = None
    ) -> Any:
        if not self._numeric:
            return xp.zeros((n, 0), dtype="float64")
        distinct = {} if distinct is None else distinct
        return xp.stack([self._kernel(p, columns, xp, distinct) for p in self._numeric], axis=1)

    def _features(self, columns: Mapping[str, Any], n: int, xp: ModuleType) -> FeatureMatrix:
        distinct: dict[str, Any] = {}
        raw = self._raw_numeric(columns, n, xp, distinct)
        numeric = ((raw - xp.asarray(self._mean)) / xp.asarray(self._std)).astype("float32")
        if self._categorical:
            categorical = xp.stack([self._kernel(p, columns, xp, distinct) for p in self._categorical], axis=1).astype(
                "int64"
            )
        else:
            categorical = xp.zeros((n, 0), dtype="int64")
        tensors = {}
        for p in self._tensors:
            canonical, _ = p.canonical(columns[p.name])
            tensors[p.name] = p.model_input(xp, canonical, None)
        return FeatureMatrix(numeric=numeric, categorical=categorical, tensors=tensors)

    def shape_groups(self, frame: Any) -> list[np.ndarray]:
        """Row indices grouped by the shapes of their tensor values (one group when every row shares them, or
        when the spec has no tensor column): each group can be one model batch."""
        n = len(frame)
        if not self._tensors:
            return [np.arange(n)]
        columns = self.columns_of(frame)
        keys: list[tuple[Any, ...]] = [()] * n
        for p in self._tensors:
            canonical, _ = p.canonical(columns[p.name])
            if isinstance(canonical, list):
                keys = [(*k, None if a is None else a.shape) for k, a in zip(keys, canonical, strict=True)]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        return [np.asarray(g, dtype=np.int64) for g in groups.values()]

    def feeds(self, m: FeatureMatrix) -> dict[str, Any]:
        """The model's inputs by name, in ``model_inputs`` order."""
        available = {"numeric": m.numeric, "categorical": m.categorical, **m.tensors}
        return {t.name: available[t.name] for t in self.model_inputs}

    # ------------------------------------------------------------------------------------------ data sets
    def row_reasons(self, frame: Any, include_label: bool = False) -> dict[str, Any]:
        """Per-row failures of a frame (raw dtypes) or canonical columns as ``{reason: mask}``."""
        return self.reasons(self.columns_of(frame, include_label), include_label)

    def validate(
        self, frame: pd.DataFrame, source: str = "<frame>", include_label: bool = True, keep: Sequence[str] = ()
    ) -> Any:
        """A data set's ``ValidationResult`` (see ``features.validation.validate_frame``); ``keep`` names columns
        outside the spec that ride along unvalidated (a row number) into the valid rows and the quarantine."""
        from inferline.features.validation import validate_with

        return validate_with(self, frame, source, include_label, keep)

    def check_structure(self, frame: pd.DataFrame, include_label: bool = True) -> Any:
        """pandera's lazy failure cases of the structure schema (an empty frame when the structure holds)."""
        from pandera.errors import SchemaErrors

        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation with empty", FutureWarning)
                self.structure_schema(include_label).validate(frame, lazy=True)
        except SchemaErrors as exc:
            return exc.failure_cases
        return None


def _copies_check(column: Column, folds: frozenset[str]) -> list[Any]:
    """A unique column's pandera check for look-alike copies, where its copies are found by key."""
    return [_lookalike_copies(column)] if column.unique and column.name in folds else []


def _lookalike_copies(column: Column) -> Any:
    """pandera's uniqueness of a text column, on look-alike keys (``vocabulary.lookalike_key``): the copies the
    column's ``duplicates`` policy refuses fail the check ``field_uniqueness``."""
    import pandera.pandas as pa

    keep: Any = "first" if column.duplicates == "all_but_first" else False

    def unique_keys(s: pd.Series) -> pd.Series:
        keys = pd.Series(lookalike_keys(s.tolist()), index=s.index, dtype=object)
        return ~keys.duplicated(keep=keep)

    # named as pandera names its own uniqueness check, so that reports read alike either way
    return pa.Check(unique_keys, name="field_uniqueness", ignore_na=True)


def _timestamp_ns(s: pd.Series) -> np.ndarray:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy(dtype="datetime64[ns]").view("int64")


def _cudf_canonical(s: Any, kind: str) -> Any:  # pragma: no cover - exercised where cuDF is installed
    """A cuDF column -> canonical form: numbers and timestamps as cupy arrays, text as a host object array."""
    if kind in TEXT_KINDS:
        return np.array(s.to_arrow().to_pylist(), dtype=object)
    if kind == "timestamp":
        return s.astype("datetime64[ns]").astype("int64").fillna(NAT).to_cupy()
    if kind == "numeric":
        return s.astype("float64").fillna(np.nan).to_cupy()
    return s.astype("int64").to_cupy()


def _length(columns: Mapping[str, Any]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def compile_contract(spec: PipelineSpec, state: FeatureState | None = None) -> Contract:
    """Compile ``spec`` (and its fitted ``state``: needed for features, not for validation) into a ``Contract``."""
    return Contract(spec, state)
