"""The parity gate: the exported ONNX model must answer like the PyTorch model it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inferline.export.runtime import onnx_session
from inferline.features.state import FeatureMatrix
from inferline.training.model import ScoringModel

__all__ = ["ParityGateFailed", "ParityReport", "run_parity_gate"]


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
            f"parity gate refused the export: onnxruntime differs from PyTorch by up to "
            f"{report.max_abs_error:.3g} (allowed {report.atol:g} absolute) with {report.class_mismatches} "
            f"decision mismatches over {report.rows} rows; worst case {worst['name']!r}. Nothing was published. "
            "Check the exported graph (unsupported op, wrong opset, tampered model.onnx) and export again."
        )


def _compare(
    name: str,
    torch_out: tuple[np.ndarray, np.ndarray],
    ort_out: list[np.ndarray],
    threshold_band: np.ndarray,
    rtol: float,
) -> dict[str, Any]:
    tp, tk = torch_out
    op, ok = ort_out
    if op.shape != tp.shape or ok.shape != tk.shape:
        return {
            "name": name,
            "rows": int(tp.shape[0]),
            "max_abs_error": float("inf"),
            "max_rel_error": float("inf"),
            "class_mismatches": int(tp.shape[0]),
            "note": f"shape {op.shape}/{ok.shape} vs {tp.shape}/{tk.shape}",
        }
    abs_err = np.abs(op.astype("float64") - tp.astype("float64"))
    rel_err = abs_err / np.maximum(np.abs(tp.astype("float64")), 1e-6)
    # a row whose score sits within tolerance of the threshold may flip without either runtime being wrong
    mismatches = int(((ok.reshape(-1) != tk.reshape(-1)) & ~threshold_band).sum())
    return {
        "name": name,
        "rows": int(tp.shape[0]),
        "max_abs_error": float(abs_err.max(initial=0.0)),
        "max_rel_error": float(rel_err.max(initial=0.0)),
        "class_mismatches": mismatches,
    }


def run_parity_gate(
    model: ScoringModel,
    onnx_path: Path,
    holdout: FeatureMatrix,
    batch_sizes: tuple[int, ...],
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> ParityReport:
    """Compare on the whole holdout and on exact batch sizes (1, 7, max_batch_size), rows drawn from the holdout."""
    session = onnx_session(onnx_path, device="cpu")
    rng = np.random.default_rng(seed)
    cases: list[tuple[str, np.ndarray, np.ndarray]] = [("holdout", holdout.numeric, holdout.categorical)]
    for bs in batch_sizes:
        idx = rng.integers(0, len(holdout), bs)
        cases.append((f"batch_{bs}", holdout.numeric[idx], holdout.categorical[idx]))
    checks = []
    threshold = float(model.threshold)
    with torch.no_grad():
        for name, num, cat in cases:
            tp, tk = model(torch.from_numpy(np.ascontiguousarray(num)), torch.from_numpy(np.ascontiguousarray(cat)))
            torch_out = (tp.numpy(), tk.numpy())
            ort_out = session.run(["probabilities", "predicted_class"], {"numeric": num, "categorical": cat})
            band = np.abs(torch_out[0][:, -1] - threshold) <= atol
            checks.append(_compare(name, torch_out, ort_out, band, rtol))
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
