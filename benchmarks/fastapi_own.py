"""The serving stack a team writes first, sharing no inferline code (this module imports nothing of inferline):
FastAPI + uvicorn (1 worker), a pydantic row model with a validator per field, hand-written per-row Python features
and the trained model as TorchScript, run eagerly by PyTorch on one thread.

- Rules mirror the fraud pipeline's (features/pipelines/fraud.py): id not blank; event_time ISO-8601 text with a UTC
  offset, from 2000-01-01 (inclusive) to 2100-01-01 (exclusive) UTC; amount finite and >= 0; currency three capital
  letters; merchant_category a lower-case slug; country two capital letters; channel web, pos or app;
  customer_age_days an integer >= 0; description optional, without control characters, U+FFFD or mojibake.
- Features, per row in plain Python: log1p of amount and of customer age; sin/cos of the fractional hour (whole
  seconds) and of the weekday of event_time in UTC; log1p of the description's length and its share of non-ASCII
  characters (0 without a description); standardized with the training mean/std; categorical columns as their
  vocabulary index (0 = unknown). Vocabularies, mean and std are read as plain JSON from the run's
  ``feature_state.json``; the model is the run's checkpoint saved with ``torch.jit.trace`` by the benchmark harness.
- Bad rows: every row is validated on its own. A row that breaks a rule gets ``status`` = the name of its first
  failing field (``"amount"``) and null ``probabilities``/``predicted_class``; the other rows of the request are
  scored. A body that is not ``{"rows": [object, ...]}`` is refused as a whole with FastAPI's 422.
- The endpoint is ``async def``: the work is sub-millisecond CPU, so running it on the event loop is faster than
  FastAPI's thread-pool hop for ``def`` endpoints.

Run: ``FASTAPI_OWN_MODEL=model.ts FASTAPI_OWN_FEATURE_STATE=feature_state.json uvicorn fastapi_own:app
--app-dir benchmarks --workers 1``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import torch
from fastapi import FastAPI
from pydantic import BaseModel, Field, ValidationError, field_validator

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TWO_PI = 2.0 * math.pi


def _is_mojibake(text: str) -> bool:
    """UTF-8 bytes decoded as cp1252/latin-1 ("CafÃ©"): re-encoding them gives valid multi-byte UTF-8."""
    if text.isascii():
        return False
    for encoding in ("cp1252", "latin-1"):
        try:
            repaired = text.encode(encoding).decode("utf-8")
        except UnicodeError:
            continue
        return repaired != text
    return False


class Row(BaseModel):
    transaction_id: str
    event_time: datetime
    amount: float = Field(ge=0, allow_inf_nan=False)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    merchant_category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    country: str = Field(pattern=r"^[A-Z]{2}$")
    channel: Literal["web", "pos", "app"]
    customer_age_days: int = Field(ge=0)
    description: str | None = None

    @field_validator("transaction_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("transaction_id must not be blank")
        return value

    @field_validator("event_time", mode="before")
    @classmethod
    def _iso_with_offset(cls, value: Any) -> datetime:
        if not isinstance(value, str):
            raise ValueError("event_time must be ISO-8601 text with a UTC offset")
        parsed = datetime.fromisoformat(value.strip())  # its ValueError is a validation error of this field
        if parsed.tzinfo is None:
            raise ValueError("event_time needs a UTC offset")
        parsed = parsed.astimezone(UTC)
        if not EARLIEST <= parsed < LATEST:
            raise ValueError("event_time must be from 2000-01-01 to 2100-01-01 UTC")
        return parsed

    @field_validator("description")
    @classmethod
    def _clean_text(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _CONTROL.search(value):
            raise ValueError("description holds control characters")
        if "\ufffd" in value:
            raise ValueError("description holds U+FFFD: it was decoded lossily upstream")
        if _is_mojibake(value):
            raise ValueError("description is UTF-8 mis-decoded as cp1252/latin-1")
        return value


def _hour(row: Row) -> float:
    t = row.event_time
    return (t.hour * 3600 + t.minute * 60 + t.second) / 3600.0


def _text(row: Row) -> str:
    return row.description or ""


# the fraud pipeline's features, written out by hand: name -> f(row) before standardization
NUMERIC: dict[str, Callable[[Row], float]] = {
    "log_amount": lambda r: math.log1p(max(r.amount, 0.0)),
    "hour_sin": lambda r: math.sin(TWO_PI * _hour(r) / 24.0),
    "hour_cos": lambda r: math.cos(TWO_PI * _hour(r) / 24.0),
    "weekday_sin": lambda r: math.sin(TWO_PI * r.event_time.weekday() / 7.0),
    "weekday_cos": lambda r: math.cos(TWO_PI * r.event_time.weekday() / 7.0),
    "log_customer_age": lambda r: math.log1p(max(r.customer_age_days, 0)),
    "description_length": lambda r: math.log1p(len(_text(r))),
    "description_non_ascii": lambda r: sum(1 for ch in _text(r) if ord(ch) > 127) / max(len(_text(r)), 1),
}
CATEGORICAL: dict[str, Callable[[Row], str]] = {
    "currency_idx": lambda r: r.currency,
    "merchant_category_idx": lambda r: r.merchant_category,
    "country_idx": lambda r: r.country,
    "channel_idx": lambda r: r.channel,
}


class Features:
    """The fitted values of one training run, read from its feature_state.json, applied row by row."""

    def __init__(self, state: dict[str, Any]) -> None:
        unknown = [n for n in state["numeric"] if n not in NUMERIC] + [
            n for n in state["categorical"] if n not in CATEGORICAL
        ]
        if unknown:
            raise ValueError(f"feature_state.json names features this app does not compute: {unknown}")
        self.numeric = [
            (NUMERIC[n], m, s) for n, m, s in zip(state["numeric"], state["mean"], state["std"], strict=True)
        ]
        self.categorical = [
            (CATEGORICAL[n], {v: i + 1 for i, v in enumerate(state["vocabularies"][n])}) for n in state["categorical"]
        ]

    def row(self, row: Row) -> tuple[list[float], list[int]]:
        numeric = [(f(row) - mean) / std for f, mean, std in self.numeric]
        categorical = [vocabulary.get(f(row), 0) for f, vocabulary in self.categorical]
        return numeric, categorical


class PredictRequest(BaseModel):
    rows: list[dict[str, Any]]


class _Loaded:
    model: Any = None
    features: Features | None = None


LOADED = _Loaded()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    torch.set_num_threads(1)
    with open(os.environ["FASTAPI_OWN_FEATURE_STATE"]) as fh:
        LOADED.features = Features(json.load(fh))
    LOADED.model = torch.jit.load(os.environ["FASTAPI_OWN_MODEL"], map_location="cpu")
    LOADED.model.eval()
    yield


app = FastAPI(title="baseline: FastAPI + pydantic + hand-written features + TorchScript", lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, list[Any]]:
    features = LOADED.features
    assert features is not None, "the lifespan loads the features before the first request"
    n = len(request.rows)
    status: list[str] = []
    numeric: list[list[float]] = []
    categorical: list[list[int]] = []
    scored: list[int] = []
    for i, raw in enumerate(request.rows):
        try:
            row = Row.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors()
            status.append(str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else "invalid")
            continue
        x, c = features.row(row)
        numeric.append(x)
        categorical.append(c)
        scored.append(i)
        status.append("ok")
    probabilities: list[list[float] | None] = [None] * n
    predicted: list[int | None] = [None] * n
    if scored:
        with torch.inference_mode():
            p, k = LOADED.model(
                torch.tensor(numeric, dtype=torch.float32), torch.tensor(categorical, dtype=torch.int64)
            )
        for j, i in enumerate(scored):
            probabilities[i] = p[j].tolist()
            predicted[i] = int(k[j, 0])
    return {"probabilities": probabilities, "predicted_class": predicted, "status": status}
