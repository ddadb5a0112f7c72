"""Ledger entries: a test pipeline that uses every rule operation and every kernel, optional columns of each
kind, a naive-timestamp policy of ``assume_utc`` and an ``elementwise`` rule (the contract suite's widest spec)."""

import numpy as np
import pandas as pd

from inferline.features.rules import (
    between,
    elementwise,
    finite,
    forbid_chars,
    ge,
    in_range,
    le,
    matches,
    max_length,
    no_mojibake,
    not_blank,
    one_of,
)
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec
from inferline.features.vocabulary import CONTROL_CHARS

ACCOUNTS = ("cash", "card", "wire")
REGIONS = ("north", "south", "east", "west", "centre")


def not_only_digits(text: str) -> bool:
    """A memo of digits alone is an account number pasted into the wrong field."""
    return not text.isdigit()


SPEC = PipelineSpec(
    name="ledger",
    version=3,
    columns=(
        Column(
            "entry_id",
            "id",
            unique=True,
            rules=(not_blank(), max_length(24), matches(r"[A-Z]{2}-[0-9]+", name="bad_id")),
        ),
        Column(
            "booked_at",
            "timestamp",
            timezone_policy="assume_utc",
            rules=(in_range("2020-01-01T00:00:00+00:00", "2030-01-01T00:00:00+00:00"),),
        ),
        Column("amount", "numeric", rules=(finite(), between(-1e6, 1e6, name="implausible"))),
        Column("fee", "numeric", required=False, rules=(ge(0, name="negative"), le(100, name="too_high"))),
        Column("units", "integer", rules=(ge(1, name="none"), one_of((1, 2, 3, 5, 8), name="not_fibonacci"))),
        Column("account", "categorical", rules=(one_of(ACCOUNTS),)),
        Column("region", "categorical", required=False, rules=(matches(r"[a-z]{2,8}", name="bad_region"),)),
        Column(
            "memo",
            "text",
            required=False,
            normalization="refuse",  # an NFD memo is a reason (not_nfc), not normalized
            rules=(
                forbid_chars(CONTROL_CHARS, name="control_chars"),
                forbid_chars("\ufffd#", name="forbidden"),
                no_mojibake(),
                max_length(40),
                elementwise(not_only_digits, name="digits_only", message="not an account number"),
            ),
        ),
        Column("flagged", "label", rules=(one_of((0, 1), name="not_binary"),)),
    ),
    features=(
        FeatureDef("log_amount", "log1p", "amount"),
        # signed: log1p would clamp a refund to 0; scale="none" passes the value as it is (no training statistics)
        FeatureDef("amount", "identity", "amount", scale="none"),
        FeatureDef("fee_z", "standardize", "fee"),
        FeatureDef("log_fee", "log1p", "fee"),
        FeatureDef("log_units", "log1p", "units"),
        FeatureDef("hour_sin", "cyclic_hour_sin", "booked_at"),
        FeatureDef("hour_cos", "cyclic_hour_cos", "booked_at"),
        FeatureDef("weekday_sin", "cyclic_weekday_sin", "booked_at"),
        FeatureDef("weekday_cos", "cyclic_weekday_cos", "booked_at"),
        FeatureDef("memo_length", "text_length", "memo"),
        FeatureDef("memo_non_ascii", "non_ascii_share", "memo"),
        FeatureDef("account_idx", "vocabulary", "account", output="categorical"),
        FeatureDef("region_idx", "vocabulary", "region", output="categorical"),
    ),
    label="flagged",
    classes=("fine", "flagged"),
    model=ModelParams(hidden=(16,), epochs=2, max_batch_size=64),
)

_MEMOS = (
    "rent",
    "Café Zürich",
    "refund 12",
    "Überweisung",
    "транзит",
    "lunch w/ client",
    "",
    "ÆØÅ butik",
    "Cafe\u0301 NFD",
)


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    account = rng.choice(ACCOUNTS, n_rows)
    amount = rng.normal(200.0, 150.0, n_rows).round(2)
    flagged = ((account == "wire") & (amount > 300) | (rng.random(n_rows) < 0.05)).astype("int64")
    fee = pd.array(np.where(rng.random(n_rows) < 0.2, np.nan, rng.uniform(0, 20, n_rows).round(2)), dtype="float64")
    memo = np.array([_MEMOS[i] if i < len(_MEMOS) else None for i in rng.integers(0, len(_MEMOS) + 2, n_rows)])
    region = np.where(rng.random(n_rows) < 0.1, None, rng.choice(REGIONS, n_rows)).astype(object)
    frame = pd.DataFrame(
        {
            "entry_id": [f"LG-{seed}{i:07d}" for i in range(n_rows)],
            "booked_at": pd.Timestamp("2026-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10**8, n_rows), "s"),
            "amount": amount,
            "fee": fee,
            "units": rng.choice([1, 2, 3, 5, 8], n_rows).astype("int64"),
            "account": account,
            "region": region,
            "memo": memo,
            "flagged": flagged,
        }
    )
    return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
