"""The parity gate: the exported ONNX model must answer like the PyTorch model it came from.

Tolerance is numpy's ``allclose`` rule, applied element by element: ``|candidate - reference| <= atol + rtol *
|reference|`` (``numpy.isclose``), so a float32 output of any magnitude passes when the two runtimes differ by
rounding only (one float32 step at 500 is 6e-5, far above any useful absolute tolerance). Both tolerances and the
worst absolute and relative errors are reported; a refusal says which kind of evidence failed (a shape, non-finite
values, numbers outside the tolerance, decisions) and advises for that kind only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inferline.core.errors import UserError
from inferline.features.state import FeatureMatrix
from inferline.release.runtime import onnx_session
from inferline.training.model import ScoringModel

__all__ = [
    "ATOL",
    "RTOL",
    "ParityGateFailed",
    "ParityReport",
    "batch_invariance_gate",
    "failure_message",
    "run_parity_gate",
]


@dataclass
class ParityReport:
    """The parity gate's verdict, as the release manifest records it (``parity``).

    - ``passed``: every output element within ``atol + rtol * |reference|`` and no decision mismatch (outside the
      decision band).
    - ``atol``, ``rtol``: the tolerances (``--parity-atol``, ``--parity-rtol``).
    - ``max_abs_error``, ``max_rel_error``: the worst differences over every check.
    - ``class_mismatches``: rows whose predicted class differs.
    - ``rows``: the rows compared, over every check.
    - ``checks``: one entry per piece of evidence (``holdout``, then ``batch_1``, ``batch_7``, ``batch_<max>``),
      each with its ``name``, ``rows``, ``max_abs_error``, ``max_rel_error``, ``outside`` (elements beyond the
      tolerance), ``class_mismatches``, and a ``note`` when the shapes differ.
    - ``outside_tolerance``: elements that broke the rule, over every check.
    - ``reference``: what the candidate was compared with (``"pytorch"``, or ``"alone"`` for the batch-invariance
      gate of an ONNX file without its source).
    """

    passed: bool
    atol: float
    rtol: float
    max_abs_error: float
    max_rel_error: float
    class_mismatches: int
    rows: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    outside_tolerance: int = 0
    reference: str = "pytorch"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ParityGateFailed(UserError, RuntimeError):
    """The parity gate refused an export; the message names the failing evidence and the advice that fits it."""

    docs = "tutorials/bring-your-own-model.md#6-publish"

    def __init__(self, report: ParityReport, pipeline: str = "") -> None:
        self.report = report
        self.pipeline = pipeline
        super().__init__(failure_message(report))


def failure_message(report: ParityReport) -> str:
    """One paragraph: what differed (shapes, non-finite values, numbers beyond ``atol + rtol*|ref|``, decisions),
    against what, and the advice for that kind of failure only."""
    against = "its PyTorch module" if report.reference == "pytorch" else "the same rows scored one at a time"
    worst = max(report.checks, key=lambda c: (c.get("outside", 0), c["max_abs_error"]))
    notes = [c["note"] for c in report.checks if c.get("note")]
    shapes = [n for n in notes if "shape" in n]
    if shapes:
        return (
            f"parity gate refused the export: onnxruntime's outputs do not have {against}'s shapes ({shapes[0]}). "
            "Nothing was published. The ONNX graph's outputs must match the model's (check the exported outputs)"
        )
    if any("non-finite" in n for n in notes):
        return (
            f"parity gate refused the export: non-finite outputs (NaN or inf) in check {worst['name']!r} against "
            f"{against}. Nothing was published. Check the model for overflow or division by zero on these inputs"
        )
    what = []
    if report.outside_tolerance:
        what.append(
            f"{report.outside_tolerance} output values outside |a-b| <= atol + rtol*|b| (atol {report.atol:g}, "
            f"rtol {report.rtol:g}; worst absolute error {report.max_abs_error:.3g}, worst relative "
            f"{report.max_rel_error:.3g})"
        )
    if report.class_mismatches:
        what.append(f"{report.class_mismatches} decisions that differ away from the decision boundary")
    if report.reference == "pytorch":
        advice = (
            "Differences this large are not float rounding: compare the module with its export (an operation "
            "the exporter lowers differently, or a model.onnx that is not the module's), or, if the outputs are "
            "large and the differences are rounding, raise --parity-rtol"
        )
    else:
        advice = (
            "the model answers a row differently depending on the other rows of its batch (batch-dependent "
            "operations, e.g. normalization over the batch): export it in eval mode, without batch statistics"
        )
    return (
        f"parity gate refused the export: onnxruntime against {against} over {report.rows} rows: "
        f"{' and '.join(what)}; worst check {worst['name']!r}. Nothing was published. {advice}"
    )


PARITY_ROWS = 2048  # rows of the whole-set comparison (bounded: image inputs are large)
ATOL = 1e-5  # absolute tolerance: float32 rounding of values near 1 (probabilities) with room
RTOL = 1e-5  # relative tolerance: ~80 float32 steps (eps 1.2e-7) of the value, for outputs far from 1


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
    name: str,
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    band: np.ndarray | None,
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    """One check: the worst absolute and relative errors, the elements outside ``atol + rtol*|reference|``
    (``numpy.isclose``), and the decisions that differ outside the band."""
    rows = int(next(iter(reference.values())).shape[0])
    worst: dict[str, Any] = {"name": name, "rows": rows, "max_abs_error": 0.0, "max_rel_error": 0.0, "outside": 0}
    worst["class_mismatches"] = 0
    for key, ref in reference.items():
        got = candidate[key]
        if got.shape != ref.shape:
            return {
                **worst,
                "max_abs_error": float("inf"),
                "max_rel_error": float("inf"),
                "class_mismatches": rows,
                "outside": int(ref.size),
                "note": f"{key}: shape {got.shape} vs {ref.shape}",
            }
        if key == "predicted_class":
            differ = got.reshape(-1) != ref.reshape(-1)
            worst["class_mismatches"] += int((differ & ~band).sum() if band is not None else differ.sum())
            continue
        a, b = got.astype("float64"), ref.astype("float64")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            worst["max_abs_error"] = float("inf")
            worst["outside"] += int((~np.isfinite(a)).sum() + (~np.isfinite(b)).sum())
            worst["note"] = f"{key}: non-finite values"
            continue
        abs_err = np.abs(a - b)
        rel_err = abs_err / np.maximum(np.abs(b), 1e-6)
        worst["outside"] += int((~np.isclose(a, b, rtol=rtol, atol=atol)).sum())
        worst["max_abs_error"] = max(worst["max_abs_error"], float(abs_err.max(initial=0.0)))
        worst["max_rel_error"] = max(worst["max_rel_error"], float(rel_err.max(initial=0.0)))
    return worst


def _cases(feeds: Mapping[str, np.ndarray], batch_sizes: tuple[int, ...], seed: int) -> list[tuple[str, np.ndarray]]:
    n = len(next(iter(feeds.values())))
    rng = np.random.default_rng(seed)
    cases = [("holdout", np.arange(min(n, PARITY_ROWS)))]
    cases += [(f"batch_{bs}", rng.integers(0, n, bs)) for bs in batch_sizes]
    return cases


def _report(checks: list[dict[str, Any]], atol: float, rtol: float, reference: str) -> ParityReport:
    max_abs = max(c["max_abs_error"] for c in checks)
    max_rel = max(c["max_rel_error"] for c in checks)
    mismatches = sum(c["class_mismatches"] for c in checks)
    outside = sum(c["outside"] for c in checks)
    return ParityReport(
        passed=bool(outside == 0 and mismatches == 0),
        atol=atol,
        rtol=rtol,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        class_mismatches=mismatches,
        rows=sum(c["rows"] for c in checks),
        checks=checks,
        outside_tolerance=outside,
        reference=reference,
    )


def run_parity_gate(
    model: ScoringModel,
    onnx_path: Path,
    feeds: Mapping[str, np.ndarray] | FeatureMatrix,
    batch_sizes: tuple[int, ...],
    atol: float = ATOL,
    rtol: float = RTOL,
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
            checks.append(_compare(name, reference, candidate, _band(reference, threshold, atol), atol, rtol))
    return _report(checks, atol, rtol, "pytorch")


def batch_invariance_gate(
    onnx_path: Path,
    feeds: Mapping[str, np.ndarray],
    batch_sizes: tuple[int, ...],
    atol: float = ATOL,
    rtol: float = RTOL,
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
        checks.append(_compare(name, reference, candidate, _band(reference, None, atol), atol, rtol))
    return _report(checks, atol, rtol, "alone")
