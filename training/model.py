"""The model: any ``nn.Module`` a pipeline names (a factory by import path) or the built-in TabularNet, and the
scoring head that ships with it in ONNX.

**The forward contract of a model factory.** ``ModelParams.factory = "pkg.mod:build"`` names a function
``build(layout: ModelLayout, **ModelParams.factory_args) -> torch.nn.Module``. The module's ``forward`` takes one
tensor per entry of ``layout.inputs``, in that order (the compiled contract's model inputs: ``numeric`` float32
[n, k] and ``categorical`` int64 [n, j] when the spec has such features, then each tensor column [n, *shape] in its
declared dtype), and returns logits [n, classes] for a classifier or values [n] or [n, 1] for regression. Batch
rows must not interact (the parity gate checks batch sizes 1, 7 and the maximum). ``ScoringModel`` wraps it with
the head every runtime shares: the calibration when training fitted one (``Calibration``: ``scale * logits +
bias``), softmax, then the decision threshold (binary) or the argmax (more classes); identity for regression. The
built-in ``TabularNet`` is the default (factory ``""``).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_bytes

__all__ = [
    "Architecture",
    "Calibration",
    "CheckpointError",
    "ModelLayout",
    "ScoringModel",
    "TabularNet",
    "build_model",
    "check_output_width",
    "factory_args_of",
    "layout_for",
    "load_checkpoint",
    "load_into",
    "load_weights",
    "save_checkpoint",
    "tabular_net",
]

CHECKPOINT_FORMAT = 2
TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class ModelLayout:
    """What a model factory builds for: the inputs in forward order as ``(name, datatype, dims per row)``, the task,
    the number of outputs (classes, or 1 for regression) and, for the tabular inputs, each categorical feature's
    embedding size (vocabulary + 1) and the number of numeric features."""

    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    task: str
    n_outputs: int
    classes: tuple[str, ...] = ()
    cardinalities: tuple[int, ...] = ()
    n_numeric: int = 0

    def input(self, name: str) -> tuple[str, str, tuple[int, ...]]:
        return next(i for i in self.inputs if i[0] == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": [[n, d, list(dims)] for n, d, dims in self.inputs],
            "task": self.task,
            "n_outputs": self.n_outputs,
            "classes": list(self.classes),
            "cardinalities": list(self.cardinalities),
            "n_numeric": self.n_numeric,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelLayout:
        return cls(
            inputs=tuple((str(n), str(dt), tuple(int(x) for x in dims)) for n, dt, dims in d["inputs"]),
            task=str(d["task"]),
            n_outputs=int(d["n_outputs"]),
            classes=tuple(d.get("classes", ())),
            cardinalities=tuple(int(c) for c in d.get("cardinalities", ())),
            n_numeric=int(d.get("n_numeric", 0)),
        )


@dataclass(frozen=True)
class Architecture:
    """The built-in TabularNet's size."""

    cardinalities: tuple[int, ...]
    n_numeric: int
    n_classes: int
    embedding_dim: int
    hidden: tuple[int, ...]
    dropout: float
    extra_width: int = 0  # flattened float tensor inputs (fixed-shape tensor columns), after the tabular ones
    n_tensors: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Architecture:
        return cls(
            cardinalities=tuple(int(c) for c in d["cardinalities"]),
            n_numeric=int(d["n_numeric"]),
            n_classes=int(d["n_classes"]),
            embedding_dim=int(d["embedding_dim"]),
            hidden=tuple(int(h) for h in d["hidden"]),
            dropout=float(d["dropout"]),
            extra_width=int(d.get("extra_width", 0)),
            n_tensors=int(d.get("n_tensors", 0)),
        )


@dataclass(frozen=True)
class Calibration:
    """Vector scaling of a classifier's logits before the softmax, ``softmax(scale * logits + bias)``: one
    temperature (``1 / scale``) and one offset per class (the first 0). For two classes it is Platt scaling of the
    logit margin. Fitted at training time when the raw scores are miscalibrated (``training.calibration``);
    ``scale > 0``, so the ranking of the rows by any class's score is unchanged."""

    scale: float
    bias: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "bias": list(self.bias)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        return cls(scale=float(d["scale"]), bias=tuple(float(b) for b in d["bias"]))


class TabularNet(nn.Module):
    """logits = MLP([standardized numeric features, embedding(categorical index) for each categorical, each
    fixed-shape tensor input flattened]). Its inputs are the layout's: ``numeric`` if the spec has numeric
    features, ``categorical`` if it has categorical ones, then the tensor columns."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.embeddings = nn.ModuleList(nn.Embedding(card, arch.embedding_dim) for card in arch.cardinalities)
        width = arch.n_numeric + arch.embedding_dim * len(arch.cardinalities) + arch.extra_width
        layers: list[nn.Module] = []
        for h in arch.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(arch.dropout)]
            width = h
        layers.append(nn.Linear(width, arch.n_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        k = 0
        if self.arch.n_numeric:
            parts.append(inputs[k])
            k += 1
        if self.arch.cardinalities:
            categorical = inputs[k]
            k += 1
            parts += [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        parts += [t.reshape(t.shape[0], -1).to(torch.float32) for t in inputs[k:]]
        return self.mlp(torch.cat(parts, dim=1))


def tabular_net(
    layout: ModelLayout, embedding_dim: int = 8, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.1
) -> TabularNet:
    """The built-in factory: TabularNet sized for ``layout`` (tensor inputs must have fixed shapes)."""
    tensors = [dims for name, _, dims in layout.inputs if name not in ("numeric", "categorical")]
    if any(d < 1 for dims in tensors for d in dims):
        raise UserError(
            f"the built-in TabularNet flattens tensor inputs and needs fixed shapes, got {tensors}; name a model "
            "factory for variable-size tensors (ModelParams.factory = 'pkg.mod:build')"
        )
    extra = sum(int(torch.tensor(dims).prod()) for dims in tensors)
    return TabularNet(
        Architecture(
            cardinalities=tuple(layout.cardinalities),
            n_numeric=layout.n_numeric,
            n_classes=layout.n_outputs,
            embedding_dim=int(embedding_dim),
            hidden=tuple(int(h) for h in hidden),
            dropout=float(dropout),
            extra_width=extra,
            n_tensors=len(tensors),
        )
    )


def build_model(factory: str, layout: ModelLayout, args: Mapping[str, Any]) -> nn.Module:
    """The pipeline's model: ``factory`` (import path; "" for the built-in TabularNet) called with ``layout`` and
    ``args``. A factory that does not return an ``nn.Module`` is refused by name."""
    if not factory:
        return tabular_net(layout, **dict(args))
    from inferline.features.imports import import_object

    build = import_object(factory, "model factory")
    try:
        net = build(layout, **dict(args))
    except TypeError as exc:
        raise UserError(
            f"model factory {factory!r} refused its arguments ({exc}); it is called as "
            f"build(layout, **{dict(args)!r}) (see inferline.training.model for the forward contract)"
        ) from exc
    if not isinstance(net, nn.Module):
        raise UserError(f"model factory {factory!r} returned a {type(net).__name__}, expected a torch.nn.Module")
    check_output_width(net, layout, f"model factory {factory!r}")
    return net


def check_output_width(net: nn.Module, layout: ModelLayout, what: str) -> None:
    """The forward contract's output, probed on 2 rows of zeros shaped as ``layout``'s inputs (4 for a variable
    dimension): ``[2, n_outputs]`` logits for a classifier, one value per row (``[2]`` or ``[2, 1]``) for
    regression; else a ``UserError`` saying what the model answered and what the spec declares. A forward that
    fails on zeros is left to training or the export to report."""
    from inferline.features.spec import TENSOR_DTYPES

    inputs = [
        torch.zeros((2, *(4 if d < 0 else d for d in dims)), dtype=getattr(torch, TENSOR_DTYPES[dt]))
        for _, dt, dims in layout.inputs
    ]
    try:
        with torch.no_grad():
            out = net(*inputs)
    except Exception:  # noqa: BLE001 - not this check's evidence: training or the export reports it
        return
    if not isinstance(out, torch.Tensor):
        return
    shape = list(out.shape)
    if layout.task == "regression":
        if shape in ([2], [2, 1]):
            return
        expected = "[2] or [2, 1] (one value per row)"
    elif shape == [2, layout.n_outputs]:
        return
    else:
        expected = f"[2, {layout.n_outputs}] (one logit per class)"
    raise UserError(
        f"{what} answers {shape} for 2 rows, but the {layout.task} spec expects {expected}; build the model from "
        "the layout it is given (layout.n_outputs outputs; see the forward contract in inferline.training.model)"
    )


class ScoringModel(nn.Module):
    """What serving runs: the pipeline's model and the head every runtime shares.

    Classification: class ``probabilities`` (softmax of the logits) and the ``predicted_class``. For two classes the
    decision threshold (chosen on validation data at training time) is part of the graph, so every runtime
    (PyTorch, onnxruntime in Triton, the batch job) decides identically; with more classes it is the argmax.
    Regression: one ``prediction`` per row (float32 [n, 1])."""

    threshold: torch.Tensor
    logit_scale: torch.Tensor
    logit_bias: torch.Tensor

    def __init__(
        self, net: nn.Module, threshold: float = 0.5, task: str | None = None, calibration: Calibration | None = None
    ) -> None:
        super().__init__()
        self.net = net
        if task is None:
            task = "binary" if getattr(getattr(net, "arch", None), "n_classes", 2) == 2 else "multiclass"
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.register_buffer("threshold", torch.tensor(float(threshold), dtype=torch.float32))
        if calibration is not None and task == "regression":
            raise ValueError("a regression model has no class scores to calibrate")
        self.calibration = calibration  # None: the graph has no calibration step at all
        if calibration is not None:
            self.register_buffer("logit_scale", torch.tensor(calibration.scale, dtype=torch.float32))
            self.register_buffer("logit_bias", torch.tensor(calibration.bias, dtype=torch.float32))

    @property
    def arch(self) -> Architecture:
        """The built-in TabularNet's architecture (a user's module has none)."""
        return _arch_of(self.net)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(*inputs)
        if self.task == "regression":
            return (out.reshape(out.shape[0], 1).to(torch.float32),)
        logits = out.to(torch.float32)
        if self.calibration is not None:
            logits = logits * self.logit_scale + self.logit_bias
        probabilities = torch.softmax(logits, dim=1)
        if self.task == "binary":
            predicted = (probabilities[:, 1] >= self.threshold).to(torch.int64)
        else:
            predicted = torch.argmax(probabilities, dim=1)
        return probabilities, predicted.unsqueeze(1)


def save_checkpoint(
    path: Path,
    net: nn.Module,
    threshold: float,
    pipeline: str,
    layout: ModelLayout | None = None,
    factory: str = "",
    factory_args: Mapping[str, Any] | None = None,
    calibration: Calibration | None = None,
) -> None:
    """A weights-only checkpoint: the state dict, and by name what builds the module for it (factory, arguments,
    layout), with the scoring head's threshold and calibration; no pickled code."""
    if layout is None:  # the built-in net's own description
        arch = _arch_of(net)
        layout = ModelLayout(
            inputs=(("numeric", "FP32", (arch.n_numeric,)), ("categorical", "INT64", (len(arch.cardinalities),))),
            task="binary" if arch.n_classes == 2 else "multiclass",
            n_outputs=arch.n_classes,
            cardinalities=arch.cardinalities,
            n_numeric=arch.n_numeric,
        )
        factory_args = {"embedding_dim": arch.embedding_dim, "hidden": list(arch.hidden), "dropout": arch.dropout}
    buf = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "pipeline": pipeline,
            "factory": factory,
            "factory_args": _plain(dict(factory_args or {})),
            "layout": layout.as_dict(),
            "threshold": float(threshold),
            "calibration": calibration.as_dict() if calibration is not None else None,
            "state_dict": net.state_dict(),
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def _arch_of(net: nn.Module) -> Architecture:
    arch = getattr(net, "arch", None)
    if not isinstance(arch, Architecture):
        raise TypeError(f"{type(net).__name__} is not the built-in TabularNet: it has no Architecture")
    return arch


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


class CheckpointError(UserError, ValueError):
    """A checkpoint inferline refuses to load (pickled code, an unknown format)."""

    docs = "tutorials/bring-your-own-model.md#publishing-a-model-trained-elsewhere"


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a weights-only checkpoint: it needs pickled code to load ({str(exc).splitlines()[0]}); "
            "inferline loads checkpoints with weights_only=True only. Retrain, or re-save the weights alone "
            "(torch.save(module.state_dict(), path))"
        ) from exc


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved by a user (``torch.save(module.state_dict(), path)``, or an inferline checkpoint),
    loaded with ``weights_only=True``."""
    payload = _load(Path(path))
    if isinstance(payload, Mapping) and "state_dict" in payload:
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(
            f"{path} holds a {type(payload).__name__}, expected a state dict (names -> tensors): save the weights "
            "with torch.save(module.state_dict(), path)"
        )
    return dict(payload)


def load_into(net: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``net.load_state_dict`` with an error that names what did not match."""
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights in {source} do not fit the module the factory built: {str(exc).splitlines()[0]} ... "
            "Check that --module and its arguments build the architecture the weights were saved from"
        ) from exc


def load_checkpoint(path: Path) -> ScoringModel:
    """Load with ``weights_only=True``: tensors and plain values only, no pickled code. A file that needs more is
    refused with the reason, never retried another way. The module is rebuilt by its factory (by import path)."""
    payload = _load(Path(path))
    fmt = payload.get("format") if isinstance(payload, Mapping) else None
    if fmt == 1:  # the built-in TabularNet before factories
        net: nn.Module = TabularNet(Architecture.from_dict(payload["architecture"]))
        net.load_state_dict(payload["state_dict"])
        return ScoringModel(net, payload["threshold"]).eval()
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {fmt!r}, expected {CHECKPOINT_FORMAT}")
    layout = ModelLayout.from_dict(payload["layout"])
    net = build_model(payload["factory"], layout, payload["factory_args"])
    load_into(net, payload["state_dict"], str(path))
    calibration = payload.get("calibration")  # absent before calibration was recorded: none
    model = ScoringModel(
        net,
        payload["threshold"],
        task=layout.task,
        calibration=Calibration.from_dict(calibration) if calibration else None,
    )
    model.eval()
    return model


def layout_for(contract: Any) -> ModelLayout:
    """The layout of a compiled ``features.contract.Contract`` (its model inputs, task and fitted sizes)."""
    spec, state = contract.spec, contract.state
    return ModelLayout(
        inputs=tuple((t.name, t.datatype, tuple(t.dims)) for t in contract.model_inputs),
        task=spec.task,
        n_outputs=len(spec.classes) or 1,
        classes=tuple(spec.classes),
        cardinalities=tuple(state.cardinalities()) if state is not None else (),
        n_numeric=len(spec.numeric_features),
    )


def factory_args_of(params: Any) -> dict[str, Any]:
    """The factory arguments of a spec's ``ModelParams``: its own for a named factory, the TabularNet sizes for the
    built-in one."""
    if params.factory:
        return dict(params.factory_args)
    return {"embedding_dim": params.embedding_dim, "hidden": list(params.hidden), "dropout": params.dropout}
