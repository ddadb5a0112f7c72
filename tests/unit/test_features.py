from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferline.features.backend import FrameBackend, backend_for, get_backend, gpu_available
from inferline.features.contract import compile_contract
from inferline.features.pipelines import fraud
from inferline.features.rules import le
from inferline.features.spec import SpecError, load_pipeline, load_pipeline_module
from inferline.features.state import FeatureState, StateMismatch, compute_features, fit_state
from inferline.features.validation import FileLevelError, validate_frame
from inferline.features.wire import encode_rows

SPEC = fraud.SPEC


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return fraud.generate(4000, seed=7)


def test_generator_is_seeded_and_realistic(frame: pd.DataFrame) -> None:
    again = fraud.generate(4000, seed=7)
    pd.testing.assert_frame_equal(frame, again)
    assert not frame.equals(fraud.generate(4000, seed=8))
    big = fraud.generate(50_000, seed=1)
    assert 0.01 < big["is_fraud"].mean() < 0.04
    assert big["transaction_id"].is_unique
    assert str(big["event_time"].dtype) == "datetime64[ns, UTC]"


def test_spec_hash_tracks_rules_and_features() -> None:
    h = SPEC.feature_hash()
    assert h == load_pipeline("fraud").feature_hash()
    changed_rule = dataclasses.replace(
        SPEC,
        columns=tuple(
            dataclasses.replace(c, rules=(le(10, name="tiny"),)) if c.name == "amount" else c for c in SPEC.columns
        ),
    )
    assert changed_rule.feature_hash() != h
    changed_limit = dataclasses.replace(
        changed_rule,
        columns=tuple(
            dataclasses.replace(c, rules=(le(11, name="tiny"),)) if c.name == "amount" else c for c in SPEC.columns
        ),
    )
    assert changed_limit.feature_hash() not in (h, changed_rule.feature_hash()), "a rule's argument is in the hash"
    reworded = dataclasses.replace(
        changed_rule,
        columns=tuple(
            dataclasses.replace(c, rules=(le(10, name="tiny", message="other words"),)) if c.name == "amount" else c
            for c in SPEC.columns
        ),
    )
    assert reworded.feature_hash() == changed_rule.feature_hash(), "a rule's message is not"
    assert dataclasses.replace(SPEC, features=SPEC.features[:-1]).feature_hash() != h


def test_unknown_pipeline_names_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"known pipelines: \[.*'fraud'"):
        load_pipeline("nope")


def test_kernels_compute_expected_values(frame: pd.DataFrame) -> None:
    state = fit_state(frame, SPEC)
    rows = frame.head(3).copy()
    rows["event_time"] = pd.to_datetime(
        ["2026-03-02T06:00:00Z", "2026-03-02T18:00:00Z", "2026-03-05T00:00:00Z"], utc=True
    )
    rows["description"] = pd.array(["Café", None, "abc"], dtype="string")
    rows["channel"] = pd.array(["web", "fax", "pos"], dtype="string")
    rows["amount"] = [0.0, math.e - 1, 10.0]
    m = compute_features(rows, SPEC, state)
    raw = m.numeric.astype("float64") * np.array(state.std) + np.array(state.mean)
    names = state.numeric
    col = {n: raw[:, i] for i, n in enumerate(names)}
    np.testing.assert_allclose(col["log_amount"], [0.0, 1.0, math.log1p(10)], atol=1e-5)
    np.testing.assert_allclose(col["hour_sin"], [1.0, -1.0, 0.0], atol=1e-5)  # 06:00 and 18:00 UTC
    np.testing.assert_allclose(col["weekday_sin"][0], 0.0, atol=1e-5)  # a Monday
    np.testing.assert_allclose(col["description_non_ascii"], [0.25, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(col["description_length"], [math.log1p(4), 0.0, math.log1p(3)], atol=1e-5)
    channel = m.categorical[:, state.categorical.index("channel_idx")]
    assert channel[1] == 0, "unknown value goes to the unknown bucket"
    assert channel[0] == state.vocabularies["channel_idx"].index("web") + 1
    assert m.numeric.dtype == np.float32 and m.categorical.dtype == np.int64


def test_state_round_trip_and_mismatch(frame: pd.DataFrame, tmp_path) -> None:
    state = fit_state(frame, SPEC)
    state.save(tmp_path / "s.json")
    loaded = FeatureState.load(tmp_path / "s.json")
    assert loaded == state
    np.testing.assert_array_equal(
        compute_features(frame, SPEC, loaded).numeric, compute_features(frame, SPEC, state).numeric
    )
    loaded.feature_hash = "0" * 64
    with pytest.raises(StateMismatch, match="retrain and republish"):
        loaded.check(SPEC)


def _corrupt(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.copy()
    bad.loc[3, "amount"] = -1.0
    bad.loc[4, "country"] = pd.NA
    bad.loc[4, "channel"] = "fax"
    bad.loc[5, "transaction_id"] = bad.loc[6, "transaction_id"]
    bad.loc[7, "amount"] = np.inf
    bad.loc[8, "description"] = "bad\x00text"
    return bad


def test_quarantine_reports_every_reason_and_loses_no_row(frame: pd.DataFrame) -> None:
    result = validate_frame(_corrupt(frame), SPEC, source="upstream.parquet")
    assert result.rows_in == result.rows_valid + result.rows_quarantined == len(frame)
    reasons = dict(zip(result.quarantine["transaction_id"], result.quarantine["_reasons"], strict=True))
    assert reasons[frame.loc[3, "transaction_id"]] == "amount:negative"
    assert reasons[frame.loc[4, "transaction_id"]] == "channel:unknown_value;country:null"  # both reported
    assert reasons[frame.loc[6, "transaction_id"]] == "transaction_id:duplicate"
    assert reasons[frame.loc[7, "transaction_id"]] == "amount:not_finite"
    assert reasons[frame.loc[8, "transaction_id"]] == "description:control_chars"
    assert result.rows_quarantined == 6  # the duplicate id quarantines both rows


def test_pandera_and_row_evaluator_agree(frame: pd.DataFrame) -> None:
    bad = _corrupt(frame)
    by_pandera = validate_frame(bad, SPEC)
    direct = compile_contract(SPEC).row_reasons(bad, include_label=True)
    assert sorted(by_pandera.reason_counts) == sorted(direct)
    for reason, mask in direct.items():
        assert by_pandera.reason_counts[reason] == int(mask.sum())


def test_file_level_break_names_file_and_column(frame: pd.DataFrame) -> None:
    broken = frame.drop(columns=["country"]).assign(
        customer_age_days=frame["customer_age_days"].astype("float64"), extra=1
    )
    with pytest.raises(FileLevelError) as info:
        validate_frame(broken, SPEC, source="part-0007.parquet")
    text = str(info.value)
    assert "part-0007.parquet" in text
    assert "'country': missing" in text
    assert "customer_age_days" not in text  # whole floats in an integer column are cast, and the cast recorded
    assert "'extra': unexpected column" in text


def _request(n: int = 4) -> dict[str, np.ndarray]:
    arrays = {c.name: np.array([f"tx{i}".encode() for i in range(n)], dtype=object) for c in SPEC.input_columns}
    arrays["event_time"] = np.array(
        [b"2026-01-01T10:00:00+02:00", b"2026-01-01T10:00:00", b"garbage", b"2026-01-01T10:00:00Z"], dtype=object
    )
    arrays["amount"] = np.array([1.0, np.nan, -2.0, np.inf])
    arrays["customer_age_days"] = np.array([1, 2, 3, 4])
    arrays["currency"] = np.array([b"USD"] * n, dtype=object)
    arrays["merchant_category"] = np.array([b"grocery"] * n, dtype=object)
    arrays["country"] = np.array([b"US", b"\xff\xfe", b"US", b"US"], dtype=object)
    arrays["channel"] = np.array([b"web"] * n, dtype=object)
    arrays["description"] = np.array([b"Caf\xc3\xa9", b"", b"ok", b"ok"], dtype=object)
    return arrays


def test_request_converts_offsets_and_reports_per_row(frame: pd.DataFrame) -> None:
    contract = compile_contract(SPEC, fit_state(frame, SPEC))
    arrays = _request()
    for path in (contract._featurize_rows, contract._featurize_vector):  # each lowering, on the same rows
        wire = [arrays[c.name] for c in SPEC.input_columns]
        m, status = path(wire, 4)
        assert list(status) == ["ok", "event_time:naive_timestamp", "event_time:unparseable", "amount:not_finite"]
        assert not m.numeric[1:].any() and not m.categorical[1:].any(), "refused rows get neutral features"
    utc = compile_contract(SPEC, fit_state(frame, SPEC))
    shifted = {**arrays, "event_time": np.array([b"2026-01-01T08:00:00Z"] * 4, dtype=object)}
    np.testing.assert_array_equal(utc.featurize(shifted)[0].numeric[0], contract.featurize(arrays)[0].numeric[0])
    nulls = {**arrays, "event_time": np.array([b"2026-01-01T08:00:00Z"] * 4, dtype=object)}
    nulls["amount"] = np.array([1.0, 2.0, 3.0, 4.0])
    _, status = contract.featurize(nulls)
    assert list(status) == ["ok", "country:invalid_utf8", "ok", "ok"], "invalid UTF-8 is its own reason, not a null"
    nulls["description"] = np.array([b"", b"", b"ok", b"ok"], dtype=object)
    assert contract.featurize(nulls)[1][0] == "ok", "an empty string on the wire is a null, and optional"


def test_categorical_verdicts_are_remembered_exactly_bounded_and_per_contract(
    frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferline.features import column_plan as contract_module

    state = fit_state(frame, SPEC)
    arrays = _request()
    arrays["event_time"] = np.array([b"2026-01-01T08:00:00Z"] * 4, dtype=object)
    arrays["amount"] = np.array([1.0, 2.0, 3.0, 4.0])
    arrays["country"] = np.array([b"US"] * 4, dtype=object)
    arrays["currency"] = np.array([b"USD", b"usd", b"EUR", b"usd"], dtype=object)
    owner = compile_contract(SPEC, state)
    first = owner.featurize(arrays)
    memo = owner._plans["currency"]._memos[("currency_idx",)]
    assert set(memo) == {b"USD", b"usd", b"EUR"}, "one entry per distinct wire value"
    again = owner.featurize(arrays)  # answered from the remembered entries
    fresh = compile_contract(SPEC, state)
    assert not fresh._plans["currency"]._memos[("currency_idx",)], "a new contract starts empty: never shared"
    for m, status in (first, again, fresh.featurize(arrays)):
        assert list(status) == ["ok", "currency:not_iso4217", "ok", "currency:not_iso4217"]
        np.testing.assert_array_equal(m.categorical, first[0].categorical)
    monkeypatch.setattr(contract_module, "MEMO_MAX", 3)
    arrays["currency"] = np.array([b"AAA", b"bbb", b"CCC", b"ddd"], dtype=object)  # a flood of new values
    assert list(owner.featurize(arrays)[1]) == ["ok", "currency:not_iso4217", "ok", "currency:not_iso4217"]
    assert len(memo) <= 3, "bounded: a flood only clears the remembered entries"


def test_request_missing_input_is_a_clear_error(frame: pd.DataFrame) -> None:
    arrays = _request()
    del arrays["amount"]
    with pytest.raises(KeyError, match=r"lacks input\(s\) \['amount'\]"):
        compile_contract(SPEC, fit_state(frame, SPEC)).featurize(arrays)


def test_backend_dispatch_chooses_by_name_and_by_frame_type(frame: pd.DataFrame) -> None:
    pandas = get_backend("pandas")
    assert (type(pandas), pandas.name, pandas.xp) == (FrameBackend, "pandas", np)
    assert get_backend("auto").name == ("cudf" if gpu_available() else "pandas")
    assert backend_for(frame) is pandas
    with pytest.raises(ValueError, match=r"unknown backend 'polars'; expected one of 'auto', 'pandas', 'cudf'"):
        get_backend("polars")  # type: ignore[arg-type]


# A fresh interpreter in which cudf and cupy cannot be imported (None in sys.modules is how Python marks a module
# as not importable: importlib.util.find_spec answers None, import raises ImportError), even on a GPU machine.
@pytest.mark.parametrize("backend", [pytest.param("cudf", marks=pytest.mark.gpu)])
def test_every_backend_computes_the_pandas_features(frame: pd.DataFrame, backend: str) -> None:
    """One contract for every backend: the same features as pandas on the same rows (nulls included)."""
    rows = frame.copy()
    rows.loc[::7, "description"] = pd.NA
    rows.loc[::11, "channel"] = "fax"
    rows.loc[::13, "event_time"] = pd.Timestamp("1969-12-31T23:30:00Z")  # before the epoch
    state = fit_state(frame, SPEC)
    expected = compute_features(rows, SPEC, state)
    b = get_backend(backend)  # type: ignore[arg-type]
    got = compute_features(b.from_pandas(rows), SPEC, state)
    np.testing.assert_allclose(b.to_numpy(got.numeric), expected.numeric, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(b.to_numpy(got.categorical), expected.categorical)


def test_request_path_rules_agree_with_batch_validation(frame: pd.DataFrame) -> None:
    bad = _corrupt(frame)
    bad.loc[9, "currency"] = "usd"
    bad.loc[10, "merchant_category"] = "Grocery Store"
    inputs = bad.drop(columns=["is_fraud"])
    by_pandera = validate_frame(inputs, SPEC, include_label=False)
    contract = compile_contract(SPEC, fit_state(frame, SPEC))
    wire = {k: v.reshape(-1) for k, v in encode_rows(inputs, SPEC).items()}
    for _ in range(2):  # the second pass answers categorical rules from remembered entries
        _, status = contract.featurize(wire)
        refused = {i: s for i, s in enumerate(status) if s != "ok"}
        assert len(refused) == by_pandera.rows_quarantined
        quarantined = dict(zip(by_pandera.quarantine["transaction_id"], by_pandera.quarantine["_reasons"], strict=True))
        for i, reason in refused.items():
            assert reason in quarantined[inputs.loc[i, "transaction_id"]].split(";")
    assert status[9] == "currency:not_iso4217"


def test_timestamp_parser_policies() -> None:
    from inferline.features.wire import parse_instants

    text = np.array(
        [
            b"2026-03-01T12:00:00.5Z",
            b"2026-03-01",
            b" 2026-03-01T12:00:00-05:00 ",
            b"3000-01-01T00:00:00Z",
            b"",
            b"31/12/2026",
        ],
        dtype=object,
    )
    ns, reasons = parse_instants(text, assume_utc=False)
    parsed = ns.view("datetime64[ns]")
    assert parsed[0] == np.datetime64("2026-03-01T12:00:00.500")
    assert parsed[2] == np.datetime64("2026-03-01T17:00:00"), "-05:00 converted to UTC"
    assert reasons == [None, "naive_timestamp", None, "unparseable", None, "unparseable"]  # 3000 overflows ns
    assert np.isnat(parsed[[1, 3, 4, 5]]).all()
    ns, reasons = parse_instants(text[:2], assume_utc=True)
    assert ns.view("datetime64[ns]")[1] == np.datetime64("2026-03-01T00:00:00") and reasons is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Caf\u00c3\u00a9 de Flore", "description:mojibake"),  # 'Café' decoded as cp1252
        ("Dont\u00e2\u20ac\u2122s", "description:mojibake"),  # a right quote, mis-decoded
        ("Caf\ufffd de Flore", "description:replacement_char"),
        ("bad\x07bell", "description:control_chars"),
        ("Café de Flore", None),
        ("Müller Drogerie", None),
        ("BETWIN CASINO ДЕПОЗИТ", None),
        ("ELEKTRO WHOLESALE ＃88", None),
    ],
)
def test_text_encoding_damage_is_caught_on_both_paths(frame: pd.DataFrame, text: str, reason: str | None) -> None:
    rows = frame.head(3).copy()
    rows.loc[1, "description"] = text
    by_pandera = validate_frame(rows, SPEC)
    contract = compile_contract(SPEC, fit_state(frame, SPEC))
    _, status = contract.featurize({k: v.reshape(-1) for k, v in encode_rows(rows, SPEC).items()})
    if reason is None:
        assert by_pandera.rows_quarantined == 0 and list(status) == ["ok"] * 3
    else:
        assert by_pandera.quarantine["_reasons"].tolist() == [reason]
        assert list(status) == ["ok", reason, "ok"]


USER_IMAGES = """
import numpy as np
import pandas as pd

from inferline.features.spec import Column, PipelineSpec

SPEC = PipelineSpec(
    name="user_images",
    version=1,
    columns=(
        Column("image", "tensor", dtype="UINT8", shape=(3, 4, 4), model_dtype="FP32"),
        Column("steps", "tensor", dtype="FP32", shape=(-1, 2)),
        Column("label", "label"),
    ),
    features=(),
    label="label",
    classes=("a", "b"),
)


def generate(n_rows, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image": list(rng.integers(0, 256, (n_rows, 3, 4, 4)).astype(np.uint8)),
            "steps": list(rng.normal(size=(n_rows, 5, 2)).astype(np.float32)),
            "label": rng.integers(0, 2, n_rows),
        }
    )
"""


def test_generate_writes_tensor_rows_of_several_dimensions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline's ``generate`` may give a tensor column one [3, H, W] array per row, as a user writes it:
    ``inferline generate`` stores it as Parquet holds it (flat for a fixed shape, nested lists for a variable one),
    and the rows read back as they were generated. pyarrow refused such arrays with a traceback before (found with
    the image tutorial)."""
    from inferline.cli import main
    from inferline.features.dataset import load_validated

    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "images.py").write_text(USER_IMAGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = str(tmp_path / "data")
    assert main(["generate", "--pipeline", "userpkg.images", "--rows", "6", "--files", "1", "--out", out]) == 0
    module = load_pipeline_module("userpkg.images")
    frame, report = load_validated([tmp_path / "data" / "userpkg.images-0000.parquet"], module.SPEC)
    assert report.rows_quarantined == 0 and len(frame) == 6
    features = compile_contract(module.SPEC).features(frame)
    expected = module.generate(6, seed=0)
    np.testing.assert_array_equal(features.tensors["image"], np.stack(expected["image"]).astype(np.float32))
    np.testing.assert_array_equal(features.tensors["steps"], np.stack(expected["steps"]))
