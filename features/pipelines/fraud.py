"""Demo pipeline: card-transaction fraud scoring.

Raw columns as upstream delivers them, the rules each must satisfy, the features the model sees, and a seeded
synthetic source with a learnable fraud signal and a realistic (about 2 %) fraud rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import (
    finite,
    forbid_chars,
    ge,
    in_range,
    matches,
    no_mojibake,
    not_blank,
    one_of,
)
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec
from inferline.features.vocabulary import CONTROL_CHARS

CHANNELS = ("web", "pos", "app")
CURRENCY_BY_COUNTRY = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "ES": "EUR", "IT": "EUR", "NL": "EUR", "CA": "CAD",
    "BR": "BRL", "IN": "INR", "NG": "NGN", "JP": "JPY", "AU": "AUD", "MX": "MXN", "RU": "RUB",
}  # fmt: skip
COUNTRIES = tuple(CURRENCY_BY_COUNTRY)
MERCHANT_CATEGORIES = (
    "grocery", "restaurants", "fuel", "travel", "electronics", "apparel", "digital_goods", "gambling",
    "pharmacy", "utilities", "gift_cards", "entertainment",
)  # fmt: skip


# what `make demo` sends as "traffic from a drifted upstream" (features.synthetic syntax)
DEMO_SHIFTS = ("amount=x1.8", "channel=web:0.7")

SPEC = PipelineSpec(
    name="fraud",
    version=1,
    description="card-transaction fraud scoring",
    columns=(
        Column("transaction_id", "id", unique=True, rules=(not_blank(name="empty", message="id must not be blank"),)),
        Column(
            "event_time",
            "timestamp",
            timezone_policy="to_utc",
            rules=(in_range("2000-01-01T00:00:00+00:00", "2100-01-01T00:00:00+00:00", name="out_of_range"),),
        ),
        Column(
            "amount",
            "numeric",
            rules=(
                finite(message="NaN and Inf are not amounts"),
                ge(0, name="negative", message="amount >= 0"),
            ),
        ),
        Column(
            "currency", "categorical", rules=(matches("[A-Z]{3}", name="not_iso4217", message="three capital letters"),)
        ),
        Column(
            "merchant_category",
            "categorical",
            rules=(matches("[a-z][a-z0-9_]{0,40}", name="bad_format", message="lower-case slug"),),
        ),
        Column(
            "country", "categorical", rules=(matches("[A-Z]{2}", name="not_iso3166", message="ISO-3166 alpha-2 code"),)
        ),
        Column("channel", "categorical", rules=(one_of(CHANNELS, name="unknown_value"),)),
        Column("customer_age_days", "integer", rules=(ge(0, name="negative"),)),
        Column(
            "description",
            "text",
            required=False,
            rules=(
                forbid_chars(CONTROL_CHARS, name="control_chars", message="no control characters"),
                forbid_chars(
                    "\ufffd", name="replacement_char", message="no U+FFFD: the text was decoded lossily upstream"
                ),
                no_mojibake(),
            ),
        ),
        Column("is_fraud", "label", rules=(one_of((0, 1), name="not_binary", message="0 or 1"),)),
    ),
    features=(
        FeatureDef("log_amount", "log1p", "amount"),
        FeatureDef("hour_sin", "cyclic_hour_sin", "event_time"),
        FeatureDef("hour_cos", "cyclic_hour_cos", "event_time"),
        FeatureDef("weekday_sin", "cyclic_weekday_sin", "event_time"),
        FeatureDef("weekday_cos", "cyclic_weekday_cos", "event_time"),
        FeatureDef("log_customer_age", "log1p", "customer_age_days"),
        FeatureDef("description_length", "text_length", "description"),
        FeatureDef("description_non_ascii", "non_ascii_share", "description"),
        FeatureDef("currency_idx", "vocabulary", "currency", output="categorical"),
        FeatureDef("merchant_category_idx", "vocabulary", "merchant_category", output="categorical"),
        FeatureDef("country_idx", "vocabulary", "country", output="categorical"),
        FeatureDef("channel_idx", "vocabulary", "channel", output="categorical"),
    ),
    label="is_fraud",
    classes=("legit", "fraud"),
    model=ModelParams(embedding_dim=6, hidden=(64, 32), epochs=6, batch_size=512, max_batch_size=256),
)

_LEGIT_DESCRIPTIONS = (
    "Whole Foods Market", "Shell Station 114", "Uber trip", "Café de Flore", "Netflix.com", "Boots Pharmacy",
    "Starbucks #2231", "Lufthansa LH400", "Zara Online", "Electricité de France", "Tesco Stores 3021",
    "Müller Drogerie", "Amazon Mktplace", "Spotify AB", "Bäckerei Schmidt",
)  # fmt: skip
_FRAUD_DESCRIPTIONS = (
    "GIFT CARD RELOAD 500", "CRYPTO XCHG TOPUP", "BETWIN CASINO ДЕПОЗИТ", "ELEKTRO WHOLESALE ＃88",
    "APPLE.COM/BILL", "PAYPAL *TRANSFER", "Amazon Mktplace", "STEAM GAMES 7781", "Western Union 0038",
)  # fmt: skip


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """A seeded stream of card transactions over 90 days of 2026, about 2 % fraud.

    Fraud differs from legitimate traffic in amount, hour of day (night, UTC), merchant category, channel,
    account age, currency-country mismatch and description text; every signal overlaps, so no single column
    gives the label away.
    """
    rng = np.random.default_rng(seed)
    fraud = rng.random(n_rows) < 0.02
    n_fraud = int(fraud.sum())

    start = pd.Timestamp("2026-01-01", tz="UTC").value
    day = rng.integers(0, 90, n_rows)
    legit_hour = np.clip(rng.normal(14.0, 4.0, n_rows), 0, 23.99)
    night_hour = (rng.normal(3.0, 3.0, n_rows)) % 24
    fraud_hour = np.where(rng.random(n_rows) < 0.45, night_hour, legit_hour)  # much fraud hides in daytime
    hour = np.where(fraud, fraud_hour, legit_hour)
    ns = start + day * 86_400 * 10**9 + (hour * 3600 * 10**9).astype("int64")
    event_time = pd.to_datetime(ns, utc=True).floor("s")

    amount = np.where(fraud, rng.lognormal(4.1, 1.2, n_rows), rng.lognormal(3.4, 1.0, n_rows)).round(2)

    country_p_legit = np.array([30, 12, 9, 8, 5, 4, 3, 8, 4, 5, 1, 4, 4, 3, 0.5])
    country_p_fraud = np.array([18, 8, 5, 5, 3, 3, 2, 4, 10, 4, 12, 2, 4, 6, 14])
    country = np.where(
        fraud,
        rng.choice(COUNTRIES, n_rows, p=country_p_fraud / country_p_fraud.sum()),
        rng.choice(COUNTRIES, n_rows, p=country_p_legit / country_p_legit.sum()),
    )
    home_currency = np.array([CURRENCY_BY_COUNTRY[c] for c in country])
    foreign = rng.random(n_rows) < np.where(fraud, 0.2, 0.05)
    other_currency = rng.choice(["USD", "EUR", "GBP"], n_rows)
    currency = np.where(foreign, other_currency, home_currency)

    mcc_p_legit = np.array([22, 16, 10, 5, 5, 9, 6, 1, 8, 10, 1, 7])
    mcc_p_fraud = np.array([12, 8, 6, 9, 14, 8, 12, 6, 5, 4, 9, 7])
    merchant_category = np.where(
        fraud,
        rng.choice(MERCHANT_CATEGORIES, n_rows, p=mcc_p_fraud / mcc_p_fraud.sum()),
        rng.choice(MERCHANT_CATEGORIES, n_rows, p=mcc_p_legit / mcc_p_legit.sum()),
    )
    channel = np.where(
        fraud, rng.choice(CHANNELS, n_rows, p=[0.5, 0.25, 0.25]), rng.choice(CHANNELS, n_rows, p=[0.3, 0.5, 0.2])
    )
    customer_age_days = np.where(fraud, rng.exponential(250.0, n_rows), rng.exponential(900.0, n_rows)).astype("int64")
    fraud_text = np.where(
        rng.random(n_rows) < 0.4, rng.choice(_FRAUD_DESCRIPTIONS, n_rows), rng.choice(_LEGIT_DESCRIPTIONS, n_rows)
    )
    description = np.where(fraud, fraud_text, rng.choice(_LEGIT_DESCRIPTIONS, n_rows)).astype(object)
    description[rng.random(n_rows) < 0.03] = None  # free text is optional upstream

    frame = pd.DataFrame(
        {
            "transaction_id": [f"tx-{seed:04d}-{i:09d}" for i in range(n_rows)],
            "event_time": event_time,
            "amount": amount.astype("float64"),
            "currency": currency,
            "merchant_category": merchant_category,
            "country": country,
            "channel": channel,
            "customer_age_days": customer_age_days,
            "description": description,
            "is_fraud": fraud.astype("int64"),
        }
    )
    assert n_fraud == int(frame["is_fraud"].sum())
    return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
