"""The serving path's one function: raw request arrays -> validated, featurized model inputs.

Used by the Triton ``preprocess`` model and by the FastAPI baseline in ``benchmarks/``, so both serve the exact
features training computed. A row that breaks a rule gets its reason as status and neutral features (zeros,
the unknown bucket), so it can ride in the same batch without producing a NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inferline.features.spec import PipelineSpec
from inferline.features.state import FeatureMatrix, FeatureState, compute_features
from inferline.features.validation import RuleVerdicts, coerce_request, first_reason

__all__ = ["featurize_request"]


def featurize_request(
    arrays: Mapping[str, np.ndarray], spec: PipelineSpec, state: FeatureState, verdicts: RuleVerdicts | None = None
) -> tuple[FeatureMatrix, np.ndarray]:
    """``(features, status)``: status is ``ok`` or the row's first failing reason (e.g. ``amount:negative``).
    A caller that serves repeatedly passes its own ``RuleVerdicts`` (one per loaded model), so each distinct
    string value's rule verdicts are computed once; None computes them for this call only."""
    columns, reasons = coerce_request(arrays, spec, verdicts)
    status = first_reason(reasons, len(columns))
    ok = (status == "ok")[:, None]
    m = compute_features(columns, spec, state)
    numeric = np.where(ok, m.numeric, np.float32(0)).astype(np.float32, copy=False)
    categorical = np.where(ok, m.categorical, 0).astype(np.int64, copy=False)
    return FeatureMatrix(numeric=numeric, categorical=categorical), status
