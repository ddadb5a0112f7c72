"""What tests/unit/test_text_defects.py (the tests that start no process) and tests/system/test_text_defects_system.py
(those that do) both use: helpers and case tables kept in one place (and the property tests in
tests/system/test_properties.py: DEFECTS)."""

from __future__ import annotations

import unicodedata
from typing import Any

import pandas as pd

from inferline.features.pipelines import fraud

SPEC = fraud.SPEC
GENUINE = ("São Paulo", "Dvořák", "東京 駅", "Привет мир", "می\u200cخواهم", "Bäckerei Schmidt", "Ελληνικά", "👍🏽")

# row changes -> the one reason each row must get, on every path
DEFECTS: list[tuple[dict[str, Any], str]] = [
    ({"description": "Uber\x00trip"}, "description:control_chars"),
    ({"description": "Café MÃ¼ller"}, "description:mojibake"),  # mojibake beside genuine non-ASCII
    ({"description": "ok\u0085then"}, "description:c1_control_chars"),
    ({"description": "zero\u200bwidth"}, "description:zero_width_chars"),
    ({"description": "\ufeffStarbucks"}, "description:bom"),
    ({"description": "x" * 1_000_000}, "description:too_long"),
    ({"transaction_id": "tx-\ufffd-1"}, "transaction_id:replacement_char"),
    ({"transaction_id": "tx-\x00-2"}, "transaction_id:control_chars"),
    ({"transaction_id": "tx-\u200b-3"}, "transaction_id:zero_width_chars"),
    ({"transaction_id": "tx-\u202e-4"}, "transaction_id:bidi_controls"),
    ({"transaction_id": "t" * 300}, "transaction_id:too_long"),
    ({"customer_age_days": None}, "customer_age_days:null"),
    ({"customer_age_days": 3.5}, "customer_age_days:not_integer"),
]
NFD = unicodedata.normalize("NFD", "Café de Flore")


def _corpus(n: int = 120) -> tuple[pd.DataFrame, dict[str, str]]:
    """Valid rows with one defect per row (their reasons by id), genuine non-ASCII descriptions, one NFD
    description, a pair of ids equal only after NFC, and "NA" (Namibia) as a country."""
    frame = fraud.generate(n, seed=5)
    frame["customer_age_days"] = frame["customer_age_days"].astype("float64")  # what a null makes of int64
    frame.loc[: len(GENUINE) - 1, "description"] = list(GENUINE)
    frame.loc[len(GENUINE), "description"] = NFD
    frame.loc[len(GENUINE) + 1, "country"] = "NA"
    frame.loc[len(GENUINE) + 1, "currency"] = "NAD"
    expected: dict[str, str] = {}
    for i, (changes, reason) in enumerate(DEFECTS, start=20):
        for column, value in changes.items():
            frame.loc[i, column] = value
        expected[str(frame.loc[i, "transaction_id"])] = reason
    frame.loc[60, "transaction_id"] = unicodedata.normalize("NFC", "tx-é-60")
    frame.loc[61, "transaction_id"] = unicodedata.normalize("NFD", "tx-é-60")
    return frame, expected


def _by_id(quarantine: pd.DataFrame) -> dict[str, str]:
    return {
        unicodedata.normalize("NFC", str(k)): str(v)
        for k, v in zip(quarantine["transaction_id"], quarantine["_reasons"], strict=True)
    }


def _expected_quarantine(expected: dict[str, str]) -> dict[str, str]:
    out = {unicodedata.normalize("NFC", k): v for k, v in expected.items()}
    out[unicodedata.normalize("NFC", "tx-é-60")] = "transaction_id:duplicate"  # both copies: one key
    return out
