"""The parity gate: the exported ONNX model must answer like the PyTorch model it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inferline.export.runtime import onnx_session
from inferline.features.state import FeatureMatrix
from inferline.training.model import ScoringModel

__all__ = ["ParityGateFailed", "ParityReport", "batch_invariance_gate", "run_parity_gate"]


@dataclass
class ParityReport:
    passed: bool
    atol: float
    rtol: float
    max_abs_error: float
    max_rel_error: float
    class_mismatches: int
    rows: int
    checks: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ParityGateFailed(RuntimeError):
    def __init__(self, report: ParityReport, pipeline: str = "") -> None:
        self.report = report
        self.pipeline = pipeline
        worst = max(report.checks, key=lambda c: c["max_abs_error"])
        super().__init__(
            f"parity gate refused the export: onnxruntime differs from its reference by up to "
            f"{report.max_abs_error:.3g} (allowed {report.atol:g} absolute) with {report.class_mismatches} "
            f"decision mismatches over {report.rows} rows; worst case {worst['name']!r}. Nothing was published. "
            "Check the exported graph (unsupported op, wrong opset, tampered model.onnx) and export again."
        )


PARITY_ROWS = 2048  # rows of the whole-set comparison (bounded: image inputs are large)


def _outputs(session: Any) -> list[str]:
    return [o.name for o in session.get_outputs()]


def _band(outputs: dict[str, np.ndarray], threshold: float | None, atol: float) -> np.ndarray | None:
    """Rows whose decision sits within tolerance of flipping (may differ between runtimes without either being
    wrong): the positive score at the threshold (binary), the top two probabilities (more classes)."""
    p = outputs.get("probabilities")
    if p is None:
        return None
    if threshold is not None and p.shape[1] == 2:
        return np.abs(p[:, 1] - threshold) <= atol
    top = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.zeros((len(p), 2))
    return (top[:, 1] - top[:, 0]) <= 2 * atol


def _compare(
    name: str, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], band: np.ndarray | None
) -> dict[str, Any]:
    rows = int(next(iter(reference.values())).shape[0])
    worst: dict[str, Any] = {"name": name, "rows": rows, "max_abs_error": 0.0, "max_rel_error": 0.0}
    worst["class_mismatches"] = 0
    for key, ref in reference.items():
        got = candidate[key]
        if got.shape != ref.shape:
            return {
                **worst,
                "max_abs_error": float("inf"),
                "max_rel_error": float("inf"),
                "class_mismatches": rows,
                "note": f"{key}: shape {got.shape} vs {ref.shape}",
            }
        if key == "predicted_class":
            differ = got.reshape(-1) != ref.reshape(-1)
            worst["class_mismatches"] += int((differ & ~band).sum() if band is not None else differ.sum())
            continue
        a, b = got.astype("float64"), ref.astype("float64")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            worst["max_abs_error"] = float("inf")
            worst["note"] = f"{key}: non-finite values"
            continue
        abs_err = np.abs(a - b)
        rel_err = abs_err / np.maximum(np.abs(b), 1e-6)
        worst["max_abs_error"] = max(worst["max_abs_error"], float(abs_err.max(initial=0.0)))
        worst["max_rel_error"] = max(worst["max_rel_error"], float(rel_err.max(initial=0.0)))
    return worst


def _cases(feeds: Mapping[str, np.ndarray], batch_sizes: tuple[int, ...], seed: int) -> list[tuple[str, np.ndarray]]:
    n = len(next(iter(feeds.values())))
    rng = np.random.default_rng(seed)
    cases = [("holdout", np.arange(min(n, PARITY_ROWS)))]
    cases += [(f"batch_{bs}", rng.integers(0, n, bs)) for bs in batch_sizes]
    return cases


def _report(checks: list[dict[str, Any]], atol: float, rtol: float) -> ParityReport:
    max_abs = max(c["max_abs_error"] for c in checks)
    max_rel = max(c["max_rel_error"] for c in checks)
    mismatches = sum(c["class_mismatches"] for c in checks)
    return ParityReport(
        passed=bool(max_abs <= atol and mismatches == 0),
        atol=atol,
        rtol=rtol,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        class_mismatches=mismatches,
        rows=sum(c["rows"] for c in checks),
        checks=checks,
    )


def run_parity_gate(
    model: ScoringModel,
    onnx_path: Path,
    feeds: Mapping[str, np.ndarray] | FeatureMatrix,
    batch_sizes: tuple[int, ...],
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> ParityReport:
    """onnxruntime against the PyTorch ``model`` it came from, on the same inputs: a whole set (``feeds``, the
    model inputs by name, up to ``PARITY_ROWS`` rows) and exact batch sizes (1, 7, max_batch_size), rows drawn from
    it. Every output is compared; a decision that differs counts unless the row sits at the decision boundary."""
    if isinstance(feeds, FeatureMatrix):
        feeds = {"numeric": feeds.numeric, "categorical": feeds.categorical}
    session = onnx_session(onnx_path, device="cpu")
    names = _outputs(session)
    threshold = float(model.threshold) if model.task == "binary" else None
    checks = []
    with torch.no_grad():
        for name, idx in _cases(feeds, batch_sizes, seed):
            batch = {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}
            torch_out = model(*(torch.from_numpy(v) for v in batch.values()))
            reference = {k: t.numpy() for k, t in zip(names, torch_out, strict=True)}
            candidate = dict(zip(names, session.run(names, batch), strict=True))
            checks.append(_compare(name, reference, candidate, _band(reference, threshold, atol)))
    return _report(checks, atol, rtol)


def batch_invariance_gate(
    onnx_path: Path,
    feeds: Mapping[str, np.ndarray],
    batch_sizes: tuple[int, ...],
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> ParityReport:
    """The gate of an ONNX file published without its PyTorch source: every row scored inside batches of 1, 7 and
    the maximum must answer as it does alone, and every output must be finite."""
    session = onnx_session(onnx_path, device="cpu")
    names = _outputs(session)
    checks = []
    for name, idx in _cases(feeds, batch_sizes, seed):
        batch = {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}
        candidate = dict(zip(names, session.run(names, batch), strict=True))
        alone = [session.run(names, {k: v[i : i + 1] for k, v in batch.items()}) for i in range(len(idx))]
        reference = {k: np.concatenate([a[j] for a in alone]) for j, k in enumerate(names)}
        checks.append(_compare(name, reference, candidate, _band(reference, None, atol)))
    return _report(checks, atol, rtol)
