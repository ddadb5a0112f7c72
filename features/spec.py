"""Pipeline specs: the single declaration of columns, rules, features, label and model hyperparameters.

A pipeline is a module under ``features.pipelines`` (or any importable module, ``package.module``) that defines
``SPEC: PipelineSpec`` and ``generate(n_rows, seed) -> pandas.DataFrame``. Every stage reads the spec; no stage
code names a column.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, NamedTuple

import pandas as pd

from inferline.features.errors import UserError

__all__ = [
    "Column",
    "FeatureDef",
    "ModelParams",
    "PipelineChoice",
    "PipelineSpec",
    "Rule",
    "SpecError",
    "choose_pipeline",
    "load_pipeline",
    "load_pipeline_module",
]

ColumnKind = Literal["id", "timestamp", "numeric", "integer", "categorical", "text", "label"]

# Raw dtypes per kind (pandas side) and the Triton datatype each raw column travels as.
RAW_DTYPES: dict[str, Any] = {
    "id": "string",
    "timestamp": pd.DatetimeTZDtype("ns", "UTC"),
    "numeric": "float64",
    "integer": "int64",
    "categorical": "string",
    "text": "string",
    "label": "int64",
}
TRITON_DTYPES: dict[str, str] = {
    "id": "BYTES",
    "timestamp": "BYTES",  # ISO-8601 with its offset, so timezone rules run server-side
    "numeric": "FP64",
    "integer": "INT64",
    "categorical": "BYTES",
    "text": "BYTES",
    "label": "INT64",
}


class SpecError(UserError, ValueError):
    """A pipeline spec is malformed or cannot be found."""


@dataclass(frozen=True)
class Rule:
    """A row-level rule. ``check`` takes the column's non-null values (a pandas Series) and returns a boolean
    Series, True where the value is valid. It must be element-wise: a value's verdict depends on that value alone
    (set-level rules such as uniqueness are column flags). ``name`` becomes the reason ``<column>:<name>``."""

    name: str
    check: Callable[[pd.Series], pd.Series]
    description: str


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    required: bool = True
    rules: tuple[Rule, ...] = ()
    unique: bool = False
    # timestamp policy: "to_utc" converts any explicit offset to UTC and rejects naive values;
    # "assume_utc" treats naive values as UTC (recorded as a normalization).
    timezone_policy: Literal["to_utc", "assume_utc"] = "to_utc"
    description: str = ""

    @property
    def raw_dtype(self) -> Any:
        return RAW_DTYPES[self.kind]

    @property
    def triton_dtype(self) -> str:
        return TRITON_DTYPES[self.kind]


@dataclass(frozen=True)
class FeatureDef:
    """One model input feature: ``kernel`` (a name in ``features.kernels.KERNELS``) applied to ``source``.

    ``output`` is "numeric" (a float32 column, standardized with training statistics) or "categorical"
    (an int64 vocabulary index, 0 = unknown/null)."""

    name: str
    kernel: str
    source: str
    output: Literal["numeric", "categorical"] = "numeric"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelParams:
    embedding_dim: int = 8
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    epochs: int = 6
    batch_size: int = 512
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    max_vocab: int = 64
    max_batch_size: int = 256  # Triton max_batch_size (rows per request/batch)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    version: int  # schema version: bump when columns or rules change meaning
    columns: tuple[Column, ...]
    features: tuple[FeatureDef, ...]
    label: str
    classes: tuple[str, ...]
    model: ModelParams = ModelParams()
    description: str = ""

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise SpecError(f"pipeline {self.name!r}: duplicate column names in {names}")
        if self.label not in names:
            raise SpecError(f"pipeline {self.name!r}: label {self.label!r} is not a column; columns are {names}")
        if self.column(self.label).kind != "label":
            raise SpecError(f"pipeline {self.name!r}: label column {self.label!r} must have kind 'label'")
        for f in self.features:
            if f.source not in names:
                raise SpecError(f"pipeline {self.name!r}: feature {f.name!r} reads unknown column {f.source!r}")
        if len(self.classes) < 2:
            raise SpecError(f"pipeline {self.name!r}: needs at least two classes, got {self.classes}")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise SpecError(f"pipeline {self.name!r} has no column {name!r}; its columns: {[c.name for c in self.columns]}")

    @property
    def input_columns(self) -> tuple[Column, ...]:
        """Raw columns a request carries (everything but the label)."""
        return tuple(c for c in self.columns if c.kind != "label")

    @property
    def id_column(self) -> Column | None:
        return next((c for c in self.columns if c.kind == "id"), None)

    @property
    def numeric_features(self) -> tuple[FeatureDef, ...]:
        return tuple(f for f in self.features if f.output == "numeric")

    @property
    def categorical_features(self) -> tuple[FeatureDef, ...]:
        return tuple(f for f in self.features if f.output == "categorical")

    def describe(self) -> dict[str, Any]:
        """A JSON-able description; rule code is included so that changing a rule changes the hash."""
        return {
            "name": self.name,
            "version": self.version,
            "label": self.label,
            "classes": list(self.classes),
            "columns": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "required": c.required,
                    "unique": c.unique,
                    "timezone_policy": c.timezone_policy if c.kind == "timestamp" else None,
                    "rules": [{"name": r.name, "code": _source(r.check)} for r in c.rules],
                }
                for c in self.columns
            ],
            "features": [
                {"name": f.name, "kernel": f.kernel, "source": f.source, "output": f.output, "params": dict(f.params)}
                for f in self.features
            ],
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.model).items()},
        }

    def feature_hash(self) -> str:
        """sha256 over everything that decides what a feature value is (columns, rules, feature definitions)."""
        d = self.describe()
        payload = {"version": d["version"], "columns": d["columns"], "features": d["features"]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _source(fn: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(fn).strip()
    except (OSError, TypeError):
        return getattr(fn, "__qualname__", repr(fn))


def load_pipeline_module(name: str) -> ModuleType:
    """Import a pipeline module: a bare name is looked up in ``inferline.features.pipelines``, a dotted name is
    imported as is."""
    module_name = name if "." in name else f"inferline.features.pipelines.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (module_name, module_name.rsplit(".", 1)[0]):
            raise
        from inferline.features import pipelines

        known = sorted(pipelines.available())
        raise SpecError(
            f"no pipeline {name!r} (looked for module {module_name!r}); known pipelines: {known}. "
            "Add one by writing features/pipelines/<name>.py with SPEC and generate()."
        ) from exc
    if not isinstance(getattr(module, "SPEC", None), PipelineSpec):
        raise SpecError(f"module {module_name!r} defines no SPEC of type PipelineSpec")
    return module


def load_pipeline(name: str) -> PipelineSpec:
    spec: PipelineSpec = load_pipeline_module(name).SPEC
    return spec


class PipelineChoice(NamedTuple):
    """The pipeline a command works on, and why: ``reason`` is None when the user named it."""

    name: str
    reason: str | None


def choose_pipeline(given: str | None) -> PipelineChoice:
    """The pipeline module of a command that reads no repository (generate, validate, train): ``given``
    (``--pipeline``) when set, else the only module in ``inferline.features.pipelines``; with none or several, a
    ``SpecError`` that lists them and asks for ``--pipeline``. Commands that read a repository or a run directory
    take the pipeline it names instead (``inferline.export.registry.choose_published``)."""
    if given:
        return PipelineChoice(given, None)
    from inferline.features import pipelines

    known = sorted(pipelines.available())
    if len(known) == 1:
        return PipelineChoice(known[0], "the only pipeline in inferline.features.pipelines; --pipeline picks another")
    if not known:
        raise SpecError(
            "no --pipeline given and inferline.features.pipelines holds no pipeline module; name an importable "
            "module with --pipeline pkg.mod or add features/pipelines/<name>.py with SPEC and generate()"
        )
    raise SpecError(
        f"no --pipeline given and several pipelines are available: {known}; choose one with --pipeline NAME"
    )
