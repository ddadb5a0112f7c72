"""The baseline "FastAPI + inferline features" (stack ``fastapi_inferline_features_http``): FastAPI + uvicorn, a
pydantic request body, the PyTorch model run eagerly, and inferline's own request path (the same validation and
kernels as the Triton preprocess model), so against the Triton stacks it compares serving, not feature code. The
baseline a team writes without inferline is ``fastapi_own.py``.

Run: ``INFERLINE_RUN_DIR=<run> uvicorn inferline.benchmarks.fastapi_app:app --workers 1``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, create_model

from inferline.features.contract import compile_contract
from inferline.features.spec import load_pipeline
from inferline.features.state import STATE_FILE, FeatureState
from inferline.training.model import load_checkpoint

torch.set_num_threads(int(os.environ.get("INFERLINE_TORCH_THREADS", "1")))
RUN_DIR = Path(os.environ["INFERLINE_RUN_DIR"])
# the run directory names its pipeline; INFERLINE_PIPELINE overrides it
SPEC = load_pipeline(os.environ.get("INFERLINE_PIPELINE") or json.loads((RUN_DIR / "run.json").read_text())["pipeline"])
STATE = FeatureState.load(RUN_DIR / STATE_FILE)
MODEL = load_checkpoint(RUN_DIR / "checkpoint.pt")
CONTRACT = compile_contract(SPEC, STATE)  # this app's own compiled contract, as each Triton model holds its own
_PY_TYPES: dict[str, Any] = {"BYTES": str | None, "FP64": float, "INT64": int}

Row: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Row", **{c.name: (_PY_TYPES[c.triton_dtype], ...) for c in SPEC.input_columns}
)


class PredictRequest(BaseModel):
    rows: list[Row]  # type: ignore[valid-type]


class PredictResponse(BaseModel):
    probabilities: list[list[float]]
    predicted_class: list[int]
    status: list[str]


app = FastAPI(title="baseline: FastAPI + inferline features + PyTorch eager")


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict", response_model=PredictResponse)
def predict(request: PredictRequest) -> PredictResponse:
    if not request.rows:
        raise HTTPException(status_code=400, detail="rows is empty; send at least one row")
    arrays = {
        c.name: np.array(
            [getattr(r, c.name) for r in request.rows], dtype=object if c.triton_dtype == "BYTES" else None
        )
        for c in SPEC.input_columns
    }
    m, status = CONTRACT.featurize(arrays)
    with torch.inference_mode():
        probabilities, predicted = MODEL(torch.from_numpy(m.numeric), torch.from_numpy(m.categorical))
    return PredictResponse(
        probabilities=probabilities.tolist(), predicted_class=predicted.reshape(-1).tolist(), status=status.tolist()
    )
