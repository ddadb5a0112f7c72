"""Distribution shifts on request, for any pipeline's synthetic data: what a drifted upstream looks like.

A shift is written ``COLUMN=xF`` (multiply a numeric column by F), ``COLUMN=+D`` (add D), or
``COLUMN=VALUE:SHARE`` (resample a categorical column so that VALUE makes up SHARE of the rows, the other values
keeping their relative frequencies). Rows are otherwise untouched, so every shifted frame still validates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from inferline.core.errors import UserError
from inferline.features.spec import PipelineSpec

__all__ = ["Shift", "ShiftError", "apply_shifts", "parse_shift"]


class ShiftError(UserError, ValueError):
    """A drift shift (``--shift``) that cannot be parsed or applied to the pipeline's columns."""

    docs = "reference/cli.md#inferline-generate"


@dataclass(frozen=True)
class Shift:
    column: str
    kind: str  # "scale" | "offset" | "share"
    value: float
    category: str | None = None

    def __str__(self) -> str:
        if self.kind == "share":
            return f"{self.column}={self.category}:{self.value:g}"
        return f"{self.column}={'x' if self.kind == 'scale' else '+'}{self.value:g}"


def parse_shift(text: str) -> Shift:
    column, sep, rule = text.partition("=")
    try:
        if not sep or not column:
            raise ValueError
        if rule.startswith("x"):
            return Shift(column, "scale", float(rule[1:]))
        if rule.startswith(("+", "-")):
            return Shift(column, "offset", float(rule))
        category, colon, share = rule.rpartition(":")
        if colon and category and 0.0 <= float(share) <= 1.0:
            return Shift(column, "share", float(share), category)
    except ValueError:
        pass
    raise ShiftError(
        f"shift {text!r} is not understood; expected COLUMN=xFACTOR (amount=x1.8), COLUMN=+DELTA "
        "(customer_age_days=+30) or COLUMN=VALUE:SHARE (channel=web:0.7)"
    )


def apply_shifts(frame: pd.DataFrame, spec: PipelineSpec, shifts: Iterable[Shift], seed: int = 0) -> pd.DataFrame:
    out = frame.copy()
    rng = np.random.default_rng(seed)
    for s in shifts:
        column = spec.column(s.column)  # a clear error for a column the pipeline does not have
        if s.kind in ("scale", "offset"):
            if column.kind not in ("numeric", "integer"):
                raise ShiftError(f"shift {s}: column {s.column!r} is {column.kind}, not numeric; use VALUE:SHARE")
            values = out[s.column] * s.value if s.kind == "scale" else out[s.column] + s.value
            out[s.column] = values.round().astype(out[s.column].dtype) if column.kind == "integer" else values
            continue
        if column.kind != "categorical":
            raise ShiftError(f"shift {s}: column {s.column!r} is {column.kind}; VALUE:SHARE needs a categorical column")
        others = out[s.column][out[s.column] != s.category].dropna()
        if others.empty:
            raise ShiftError(f"shift {s}: column {s.column!r} has no values other than {s.category!r} to trade")
        n = len(out)
        take = rng.random(n) < s.value
        out.loc[take, s.column] = s.category
        resampled = rng.choice(others.to_numpy(dtype=object), size=int((~take).sum()))
        out.loc[~take, s.column] = resampled
    return out
