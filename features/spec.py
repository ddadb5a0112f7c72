"""Pipeline specs: the single declaration of columns, rules, features, label and model hyperparameters.

A pipeline is a module under ``features.pipelines`` (or any importable module, ``package.module``) that defines
``SPEC: PipelineSpec`` and ``generate(n_rows, seed) -> pandas.DataFrame``. Every stage reads the spec; no stage
code names a column.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, NamedTuple

import pandas as pd

from inferline.core.errors import UserError
from inferline.features.rules import Rule, normalized, rule_from_dict, text_defaults
from inferline.features.vocabulary import TEXT_KINDS

__all__ = [
    "Column",
    "FeatureDef",
    "ModelParams",
    "PipelineChoice",
    "PipelineNotFound",
    "PipelineSpec",
    "Rule",
    "SpecError",
    "choose_pipeline",
    "load_pipeline",
    "load_pipeline_module",
    "read_spec",
    "spec_beside",
    "spec_from_dict",
    "write_spec",
]

ColumnKind = Literal["id", "timestamp", "numeric", "integer", "categorical", "text", "label", "tensor"]
Task = Literal["binary", "multiclass", "regression"]
# text, id and categorical columns: NFC-normalize (recorded), refuse text that is not NFC, or leave it as it is
TextNormalization = Literal["nfc", "refuse", "none"]
# a unique column's repeated values: quarantine every copy, or keep the first (in input order) and quarantine the rest
DuplicatePolicy = Literal["all", "all_but_first"]

# Raw dtypes per kind (pandas side) and the Triton datatype each raw column travels as.
RAW_DTYPES: dict[str, Any] = {
    "id": "string",
    "timestamp": pd.DatetimeTZDtype("ns", "UTC"),
    "numeric": "float64",
    "integer": "int64",
    "categorical": "string",
    "text": "string",
    "label": "int64",
    "tensor": "object",  # one array (or nested list) per row: a Parquet list column
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
# tensor columns: the Triton datatypes they may declare, with their numpy dtypes
TENSOR_DTYPES: dict[str, str] = {
    "FP32": "float32",
    "FP64": "float64",
    "FP16": "float16",
    "INT64": "int64",
    "INT32": "int32",
    "INT16": "int16",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


class SpecError(UserError, ValueError):
    """A pipeline spec is malformed or cannot be found."""

    docs = "tutorials/bring-your-own-model.md#1-the-package-a-spec-a-kernel-a-module"


class PipelineNotFound(SpecError):
    """No pipeline module of that name can be imported: not in ``inferline.features.pipelines``, not installed,
    not on ``PYTHONPATH``."""

    docs = "tutorials/bring-your-own-model.md#where-your-modules-must-be-importable"


@dataclass(frozen=True)
class Column:
    """One raw column of a row: its name, its kind, whether it may be null, and the rules its values must keep.

    - ``name``: the column's name in the data files and the name of the request's input tensor.
    - ``kind``: ``"id"`` (text, e.g. a transaction id), ``"timestamp"`` (RFC 3339 with an offset on the wire),
      ``"numeric"`` (float64), ``"integer"`` (int64, never null), ``"categorical"`` (text from a small set),
      ``"text"`` (free text), ``"label"`` (the target: in training data, never in a request) or ``"tensor"`` (one
      array per row, with ``dtype`` and ``shape``).
    - ``required``: a null is quarantined with the reason ``<name>:null`` (``False``: nulls pass, and reach the
      kernels as null).
    - ``rules``: the ``Rule`` objects each non-null value must keep (``ge(0, name="negative")``, ...); a row that
      breaks one is quarantined with the reason ``<name>:<rule name>``.
    - ``unique``, ``duplicates``: with ``unique=True`` a repeated value is quarantined (``<name>:duplicate``),
      within a file and across a stage's files; ``duplicates`` says which copies: ``"all"`` (default) or
      ``"all_but_first"`` (the first, in input order, is kept).
    - ``timezone_policy`` (timestamps): ``"to_utc"`` (default) converts an explicit offset to UTC and refuses a
      value without one; ``"assume_utc"`` reads a value without an offset as UTC (recorded as a normalization).
    - ``description``: free text, kept in the release's spec snapshot.
    - ``dtype``, ``shape``, ``preprocess``, ``model_dtype`` (tensor columns only): the Triton datatype (``"FP32"``,
      ``"UINT8"``, ...), the per-row shape (``-1`` for a variable dimension, e.g. ``(3, 32, 32)`` or ``(-1,)``), an
      optional preprocessing function by import path (``"pkg.mod:fn"``, ``fn(xp, batch) -> batch``) and the
      datatype of its result, which is the model input (default ``dtype``).
    - ``normalization`` (id, categorical and text columns): ``"nfc"`` (default) normalizes text to Unicode NFC
      before the rules run, ``"refuse"`` quarantines text that is not NFC, ``"none"`` leaves it as it is.
    - ``defaults`` (id, categorical and text columns): ``True`` (default) adds the protective rules that the
      column does not declare itself (``text_defaults``: a maximum length, no control, zero-width or bidi code
      points; for id and categorical columns also no look-alike characters or untidy white space).
    """

    name: str
    kind: ColumnKind
    required: bool = True
    rules: tuple[Rule, ...] = ()
    unique: bool = False
    # timestamp policy: "to_utc" converts any explicit offset to UTC and rejects naive values;
    # "assume_utc" treats naive values as UTC (recorded as a normalization).
    timezone_policy: Literal["to_utc", "assume_utc"] = "to_utc"
    description: str = ""
    # tensor columns only: the Triton datatype and the per-row shape (-1 for a variable dimension), and an optional
    # preprocessing function by import path ("pkg.mod:fn", ``fn(xp, batch) -> batch``) whose result, cast to
    # ``model_dtype`` (default ``dtype``), is the model input. A regression label is "FP64" (set by the spec).
    dtype: str | None = None
    shape: tuple[int, ...] = ()
    preprocess: str | None = None
    model_dtype: str | None = None
    # unique columns: which copies of a repeated value are quarantined (within a file and across the files of a stage)
    duplicates: DuplicatePolicy = "all"
    # text kinds: Unicode normalization (None: "nfc" on a declared column, "none" on a snapshot that predates it)
    normalization: TextNormalization | None = None
    # text kinds: add the protective default rules (``features.rules.text_defaults``) for what the column does not
    # declare itself; a release's snapshot records the rules it ran with, so reading one back adds nothing
    defaults: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind in TEXT_KINDS:
            if self.normalization is None:
                object.__setattr__(self, "normalization", "nfc" if self.defaults else "none")
            if self.defaults:
                rules = self.rules
                if self.normalization == "refuse" and not any(r.op == "normalized" for r in rules):
                    rules = (*rules, normalized("NFC"))
                object.__setattr__(self, "rules", text_defaults(self.kind, rules))
        elif self.normalization not in (None, "none"):
            raise SpecError(
                f"column {self.name!r} ({self.kind}): normalization={self.normalization!r} applies to text, id and "
                "categorical columns only"
            )
        if self.normalization not in (None, "nfc", "refuse", "none"):
            raise SpecError(
                f"column {self.name!r}: normalization={self.normalization!r}; expected 'nfc', 'refuse' or 'none'"
            )
        if self.kind == "integer" and not self.required:
            raise SpecError(
                f"column {self.name!r}: an integer column cannot be optional (int64 has no null, on the wire either, "
                "so a null would be a different value on each path); declare it kind='numeric' to allow nulls"
            )
        if self.duplicates not in ("all", "all_but_first"):
            raise SpecError(f"column {self.name!r}: duplicates={self.duplicates!r}; expected 'all' or 'all_but_first'")

    @property
    def raw_dtype(self) -> Any:
        if self.kind == "label" and self.dtype == "FP64":
            return "float64"
        return RAW_DTYPES[self.kind]

    @property
    def triton_dtype(self) -> str:
        if self.kind == "tensor" and self.dtype is not None:
            return self.dtype
        return TRITON_DTYPES[self.kind]

    @property
    def input_dtype(self) -> str:
        """A tensor column's model-input datatype (after its preprocessing)."""
        return self.model_dtype or self.dtype or TRITON_DTYPES[self.kind]

    def extra(self) -> dict[str, Any]:
        """The fields added since the first snapshot format, for ``describe``: each only where it is set, so a
        spec that does not use it hashes as before."""
        d: dict[str, Any] = {}
        if self.normalization not in (None, "none"):
            d["normalization"] = self.normalization
        if self.duplicates != "all":
            d["duplicates"] = self.duplicates
        if self.kind != "tensor":
            return d
        return {
            **d,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "preprocess": self.preprocess,
            "model_dtype": self.model_dtype,
        }


@dataclass(frozen=True)
class FeatureDef:
    """One model input feature: ``kernel`` applied to ``source``. ``kernel`` is a name in
    ``features.kernels.KERNELS`` or the import path of a pipeline's own ``Kernel`` (``"pkg.mod:name"``).

    ``output`` is "numeric" (a float32 column) or "categorical" (an int64 vocabulary index, 0 = unknown/null).
    A numeric feature is standardized with training statistics (``scale="standard"``) unless ``scale="none"``
    (the kernel's value as it is: what a model trained elsewhere on raw values expects)."""

    name: str
    kernel: str
    source: str
    output: Literal["numeric", "categorical"] = "numeric"
    params: Mapping[str, Any] = field(default_factory=dict)
    scale: Literal["standard", "none"] = "standard"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kernel": self.kernel, "source": self.source, "output": self.output}
        d["params"] = dict(self.params)
        if self.scale != "standard":
            d["scale"] = self.scale  # only when set: specs without it hash as before
        return d


@dataclass(frozen=True)
class ModelParams:
    """How the model is built and trained, and the largest batch the server takes.

    - ``factory``: the model, a function by import path (``"pkg.mod:build"``), called as
      ``build(layout, **factory_args)`` with a ``ModelLayout`` (the inputs in forward order, the task, the number of
      outputs) and returning a ``torch.nn.Module`` (the forward contract is in ``inferline.training.model``).
      ``""`` (default) is the built-in TabularNet.
    - ``embedding_dim``, ``hidden``, ``dropout``: the built-in TabularNet's size (each categorical feature's
      embedding width, the hidden layers' widths, the dropout rate); a factory of your own ignores them.
    - ``max_vocab``: the most values a categorical feature's vocabulary keeps (the most frequent, each seen at
      least 5 times in the training rows); any other value is index 0, unknown.
    - ``factory_args``: the factory's keyword arguments (JSON-able; they go into the release's manifest).
    - ``epochs``, ``batch_size``, ``learning_rate``, ``weight_decay``: training (AdamW).
    - ``max_batch_size``: the rows of one request or one server batch (Triton's ``max_batch_size``); also the
      largest batch size the parity gate checks.
    """

    embedding_dim: int = 8
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    epochs: int = 6
    batch_size: int = 512
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    max_vocab: int = 64
    max_batch_size: int = 256  # Triton max_batch_size (rows per request/batch)
    # the model: a factory by import path ("pkg.mod:build", see ``training.model.ModelLayout`` for its contract) and
    # its keyword arguments; "" is the built-in TabularNet (sized by the fields above)
    factory: str = ""
    factory_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline: what a row is, what the model sees, what it predicts and how it is trained. A pipeline module
    defines one as ``SPEC``, beside ``generate(n_rows, seed)``; every stage reads it, and a training run and a
    release keep a snapshot of it (``spec.json``), so a release is served by the spec it was trained with.

    - ``name``: the pipeline's name: the served model's name (``fraud``), its registry and its releases
      (``fraud:3``).
    - ``version``: the schema version; bump it when a column or a rule changes meaning.
    - ``columns``: the raw columns (``Column``), the label among them.
    - ``features``: the model's tabular inputs (``FeatureDef``: a kernel applied to a column); tensor columns are
      model inputs themselves. A spec needs at least one feature or tensor column.
    - ``label``: the label column's name.
    - ``classes``: the class names, in the order of the model's outputs (two: binary, more: multi-class), or
      ``()`` for a regression (the label is then a float).
    - ``model``: ``ModelParams``: the model factory and the training settings.
    - ``description``: free text, kept in the snapshot.
    - ``golden_set``: a Parquet or CSV file of labelled raw rows on which the quality gate also scores each new
      release against the current one (``""``: none). A relative path is read from the directory
      ``inferline train`` and ``inferline export publish`` run in; publish copies the file into the release.

    A spec that contradicts itself is refused when it is built (``SpecError``, saying what to change): a rule that
    does not apply to its column's kind, a feature reading an unknown column, a label that is not a column, a single
    class.
    """

    name: str
    version: int  # schema version: bump when columns or rules change meaning
    columns: tuple[Column, ...]
    features: tuple[FeatureDef, ...]
    label: str
    classes: tuple[str, ...]  # () for a regression pipeline
    model: ModelParams = ModelParams()
    description: str = ""
    # a labelled set (Parquet or CSV file of raw rows with the label) on which export's quality gate also scores a
    # candidate against the current release (export.quality); "" for none. A relative path is read from the working
    # directory of `inferline train` / `export publish`; publish copies the file into the release.
    golden_set: str = ""

    def __post_init__(self) -> None:
        # the label's datatype follows the task: class indices, or a float target for regression
        label_dtype = "INT64" if self.classes else "FP64"
        object.__setattr__(
            self,
            "columns",
            tuple(
                replace(c, dtype=label_dtype) if c.kind == "label" and c.name == self.label else c for c in self.columns
            ),
        )
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise SpecError(f"pipeline {self.name!r}: duplicate column names in {names}")
        if self.label not in names:
            raise SpecError(f"pipeline {self.name!r}: label {self.label!r} is not a column; columns are {names}")
        if self.column(self.label).kind != "label":
            raise SpecError(f"pipeline {self.name!r}: label column {self.label!r} must have kind 'label'")
        for c in self.columns:
            if c.kind == "tensor":
                self._check_tensor(c)
            for r in c.rules:
                if not r.fits(c.kind):
                    raise SpecError(
                        f"pipeline {self.name!r}, column {c.name!r} ({c.kind}): rule {r.op}() does not apply to "
                        f"{c.kind} values; see inferline.features.rules for what each rule checks"
                    )
        for f in self.features:
            if f.source not in names:
                raise SpecError(f"pipeline {self.name!r}: feature {f.name!r} reads unknown column {f.source!r}")
            if f.kernel == "standardize" and f.scale == "none":
                raise SpecError(
                    f"pipeline {self.name!r}: feature {f.name!r} uses kernel 'standardize' with scale='none'"
                )
            if self.column(f.source).kind == "tensor":
                raise SpecError(
                    f"pipeline {self.name!r}: feature {f.name!r} reads tensor column {f.source!r}; a tensor column "
                    "is a model input itself (give the column a preprocess= function to transform it)"
                )
        if len(self.classes) == 1:
            raise SpecError(
                f"pipeline {self.name!r}: classes={self.classes} names one class; a classifier needs at least two, "
                "and a regression pipeline declares classes=()"
            )
        if not self.features and not self.tensor_columns:
            raise SpecError(
                f"pipeline {self.name!r} declares no features and no tensor columns: the model has no input"
            )

    def _check_tensor(self, c: Column) -> None:
        if c.dtype not in TENSOR_DTYPES or (c.model_dtype is not None and c.model_dtype not in TENSOR_DTYPES):
            raise SpecError(
                f"pipeline {self.name!r}, tensor column {c.name!r}: dtype {c.dtype!r} / model_dtype "
                f"{c.model_dtype!r}; expected one of {sorted(TENSOR_DTYPES)}"
            )
        if not c.shape or any(not isinstance(d, int) or (d < 1 and d != -1) for d in c.shape):
            raise SpecError(
                f"pipeline {self.name!r}, tensor column {c.name!r}: shape {c.shape!r}; expected the per-row dims "
                "as positive integers, -1 for a variable one (e.g. (3, 224, 224) or (-1,))"
            )
        if c.unique:
            raise SpecError(f"pipeline {self.name!r}, tensor column {c.name!r}: unique= does not apply to tensors")

    @property
    def task(self) -> Task:
        """``regression`` without classes, ``binary`` with two, ``multiclass`` with more."""
        if not self.classes:
            return "regression"
        return "binary" if len(self.classes) == 2 else "multiclass"

    @property
    def tensor_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.kind == "tensor")

    @property
    def timestamp_column(self) -> Column | None:
        return next((c for c in self.columns if c.kind == "timestamp"), None)

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
        """The spec as JSON-able data: what a release snapshots (``spec_from_dict`` reads it back)."""
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
                    "rules": [r.to_dict() for r in c.rules],
                    **c.extra(),
                }
                for c in self.columns
            ],
            "features": [f.describe() for f in self.features],
            "model": {
                k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
                for k, v in vars(self.model).items()
            },
            "description": self.description,
            "column_descriptions": {c.name: c.description for c in self.columns if c.description},
            **({"golden_set": self.golden_set} if self.golden_set else {}),  # only when set: snapshots as before
        }

    def feature_hash(self) -> str:
        """sha256 over everything that decides what a feature value or a row's status is: the columns with their
        rules (operation, arguments, reason code: not the human message) and the feature definitions."""
        d = self.describe()
        columns = [
            {**c, "rules": [{k: r[k] for k in ("op", "args", "name")} for r in c["rules"]]} for c in d["columns"]
        ]
        payload = {"version": d["version"], "columns": columns, "features": d["features"]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def spec_from_dict(d: Mapping[str, Any]) -> PipelineSpec:
    """The inverse of ``PipelineSpec.describe``: a release's snapshot back into a spec."""
    try:
        notes = d.get("column_descriptions", {})
        columns = tuple(
            Column(
                c["name"],
                c["kind"],
                required=c["required"],
                unique=c["unique"],
                rules=tuple(rule_from_dict(r) for r in c["rules"]),
                timezone_policy=c["timezone_policy"] or "to_utc",
                description=notes.get(c["name"], ""),
                dtype=c.get("dtype"),
                shape=tuple(c.get("shape") or ()),
                preprocess=c.get("preprocess"),
                model_dtype=c.get("model_dtype"),
                duplicates=c.get("duplicates", "all"),
                normalization=c.get("normalization", "none"),
                defaults=False,  # the snapshot lists every rule its release ran with
            )
            for c in d["columns"]
        )
        features = tuple(
            FeatureDef(
                f["name"],
                f["kernel"],
                f["source"],
                output=f["output"],
                params=f["params"],
                scale=f.get("scale", "standard"),
            )
            for f in d["features"]
        )
        model: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["model"].items()}
        model["factory_args"] = dict(d["model"].get("factory_args") or {})
        return PipelineSpec(
            name=d["name"],
            version=d["version"],
            columns=columns,
            features=features,
            label=d["label"],
            classes=tuple(d["classes"]),
            model=ModelParams(**model),
            description=d.get("description", ""),
            golden_set=d.get("golden_set", ""),
        )
    except (KeyError, TypeError) as exc:
        raise SpecError(f"not a serialized pipeline spec (missing or malformed field: {exc})") from exc


SPEC_FILE = "spec.json"  # the spec snapshot a training run and a release carry


def write_spec(spec: PipelineSpec, path: Path) -> None:
    """Snapshot ``spec`` (its declarative form and its feature hash) atomically: a run and a release carry their
    own spec, so that serving, batch and the monitor never read the live pipeline module."""
    from inferline.core.files import atomic_write_json

    atomic_write_json(Path(path), {"format": 1, "feature_hash": spec.feature_hash(), "spec": spec.describe()})


def read_spec(path: Path | str) -> PipelineSpec:
    """A snapshot written by ``write_spec``, checked against its recorded hash."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path} does not exist: no spec snapshot (republish the release from a current run)") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path} is not JSON ({exc}); the snapshot was damaged: republish the release") from exc
    spec = spec_from_dict(data.get("spec", {}))
    if spec.feature_hash() != data.get("feature_hash"):
        raise SpecError(
            f"{path}: the spec's hash is {spec.feature_hash()[:12]} but the snapshot records "
            f"{str(data.get('feature_hash'))[:12]}; it was edited after it was written: republish the release"
        )
    return spec


def spec_beside(path: Path | str, pipeline: str) -> PipelineSpec:
    """The spec snapshot in the same folder as ``path`` (a run's or a release's feature_state.json); a folder
    written before snapshots existed falls back to the live pipeline module ``pipeline``."""
    snapshot = Path(path).parent / SPEC_FILE
    return read_spec(snapshot) if snapshot.exists() else load_pipeline(pipeline)


def load_pipeline_module(name: str) -> ModuleType:
    """Import a pipeline module: a bare name is looked up in ``inferline.features.pipelines``, a dotted name is
    imported as is."""
    module_name = name if "." in name else f"inferline.features.pipelines.{name}"
    from inferline.features.imports import import_module

    try:  # a module that is there but fails its own import: ImportPathError naming the module and its error
        module = import_module(module_name, "pipeline module")
    except ModuleNotFoundError as exc:
        from inferline.features import pipelines

        known = sorted(pipelines.available())
        raise PipelineNotFound(
            f"no pipeline {name!r} (looked for module {module_name!r}; {exc.name!r} is not importable); known "
            f"pipelines: {known}. Add one by writing features/pipelines/<name>.py with SPEC and generate(), or "
            "install the package that holds it (or put its folder on PYTHONPATH)"
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
    take the pipeline it names instead (``inferline.release.registry.choose_published``)."""
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
