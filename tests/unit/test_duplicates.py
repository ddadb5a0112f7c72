"""Issue 16, class 2: values of a unique column repeated within one stage (a file, the files of a training set, the
partitions of a batch job), quarantined as ``<column>:duplicate`` by the column's declared policy on every path."""

from __future__ import annotations

import dataclasses
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from pandera.errors import SchemaErrors

from inferline.batch.duplicates import find_duplicates, scan_partition
from inferline.batch.plan import plan_job
from inferline.features.contract import compile_contract
from inferline.features.dataset import load_validated, quarantine_name
from inferline.features.pipelines import fraud
from inferline.features.spec import PipelineSpec
from inferline.features.state import fit_state
from inferline.features.wire import encode_rows
from tests.duplicates_cases import DUP, ID, _two_files, _write

SPEC = fraud.SPEC


def _keep_first(spec: PipelineSpec) -> PipelineSpec:
    """The fraud spec with its id column declared ``duplicates="all_but_first"``."""
    columns = tuple(dataclasses.replace(c, duplicates="all_but_first") if c.name == ID else c for c in spec.columns)
    return dataclasses.replace(spec, columns=columns)


def _quarantine(folder: Path, path: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / quarantine_name(path))


def test_all_quarantines_every_copy_across_files_with_every_reason(tmp_path: Path) -> None:
    a, b, shared = _two_files(tmp_path)
    valid, report = load_validated([a, b], SPEC, quarantine_dir=tmp_path / "q")
    qa, qb = _quarantine(tmp_path / "q", a), _quarantine(tmp_path / "q", b)
    a_ids = pd.read_parquet(a)[ID].tolist()
    # the first copies, in the earlier file, are quarantined in their own file too
    assert qa[ID].tolist() == a_ids[:5] and set(qa["_reasons"]) == {DUP}
    assert qb[ID].tolist() == [*a_ids[:4], shared["thrice"], shared["thrice"]]
    assert qb["_reasons"].tolist() == [DUP] * 3 + [f"amount:negative;{DUP}"] + [DUP] * 2  # one row, all reasons
    assert set(qa["_source"]) == {str(a)} and set(qb["_source"]) == {str(b)}
    assert [f["reasons"] for f in report.files] == [{DUP: 5}, {DUP: 6, "amount:negative": 1}]
    for f, q in zip(report.files, (qa, qb), strict=True):
        assert f["rows_in"] == 200 == f["rows_valid"] + f["rows_quarantined"] and f["rows_quarantined"] == len(q)
    assert report.rows_in == 400 == len(valid) + len(qa) + len(qb)
    assert not set(valid[ID]) & set(shared.values()) and valid[ID].is_unique


def test_all_but_first_keeps_the_first_copy_in_input_order(tmp_path: Path) -> None:
    a, b, shared = _two_files(tmp_path)
    valid, report = load_validated([a, b], _keep_first(SPEC), quarantine_dir=tmp_path / "q")
    assert not (tmp_path / "q" / quarantine_name(a)).exists(), "every first copy is in a.parquet, and valid"
    qb = _quarantine(tmp_path / "q", b)
    assert qb["_reasons"].tolist() == [DUP] * 3 + [f"amount:negative;{DUP}"] + [DUP] * 2
    assert report.files[1]["reasons"] == {DUP: 6, "amount:negative": 1}
    assert report.rows_in == 400 == len(valid) + len(qb) and valid[ID].is_unique
    assert set(shared.values()) <= set(valid[ID])


def test_all_but_first_within_one_file_keeps_its_first_row(tmp_path: Path) -> None:
    frame = fraud.generate(30, seed=5)
    frame.loc[[7, 19], ID] = frame.loc[2, ID]
    path = _write(tmp_path / "one.parquet", frame)
    valid, report = load_validated([path], _keep_first(SPEC), quarantine_dir=tmp_path / "q", max_invalid_share=0.1)
    assert report.files[0]["reasons"] == {DUP: 2} and len(valid) == 28
    assert frame.loc[2, "amount"] == valid.loc[valid[ID] == frame.loc[2, ID], "amount"].item()
    try:  # pandera's own uniqueness check, built from the same spec, agrees
        compile_contract(_keep_first(SPEC)).schema().validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        assert cases.loc[cases["check"] == "field_uniqueness", "index"].tolist() == [7, 19]
    else:
        pytest.fail("pandera found no duplicate")


def test_nfc_and_nfd_look_alikes_are_one_id_across_files(tmp_path: Path) -> None:
    a, b = fraud.generate(20, seed=31), fraud.generate(20, seed=32)
    a.loc[0, ID] = unicodedata.normalize("NFC", "tx-caf\u00e9-1")
    b.loc[0, ID] = unicodedata.normalize("NFD", "tx-caf\u00e9-1")
    assert a.loc[0, ID] != b.loc[0, ID]
    pa_, pb = _write(tmp_path / "a.parquet", a), _write(tmp_path / "b.parquet", b)
    valid, report = load_validated([pa_, pb], SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=0.1)
    assert [f["reasons"] for f in report.files] == [{DUP: 1}, {DUP: 1}]
    for path in (pa_, pb):
        q = _quarantine(tmp_path / "q", path)
        assert q[ID].tolist() == ["tx-caf\u00e9-1"] and q["_reasons"].tolist() == [DUP]  # compared, kept as NFC
    assert len(valid) == 38


def test_the_request_path_follows_the_policy() -> None:
    rows = fraud.generate(12, seed=3).drop(columns=[SPEC.label])
    rows.loc[[4, 9], ID] = rows.loc[1, ID]
    for spec, expected in ((SPEC, [1, 4, 9]), (_keep_first(SPEC), [4, 9])):
        contract = compile_contract(spec, fit_state(fraud.generate(300, seed=2), spec))
        for n in (12, 6):  # the vector lowering, and the scalar one (small requests)
            _, status = contract.featurize(encode_rows(rows.iloc[:n], spec))
            assert [i for i, s in enumerate(status) if s == DUP] == [i for i in expected if i < n]


def test_the_pre_pass_applies_the_policy_over_the_whole_input(tmp_path: Path) -> None:
    a, _, _ = _two_files(tmp_path)
    for spec, marks, values in (
        (SPEC, {0: {ID: (0, 1, 2, 3, 4)}, 1: {ID: (0, 1, 2, 3, 4, 5)}}, 5),
        (_keep_first(SPEC), {1: {ID: (0, 1, 2, 3, 4, 5)}}, 5),
    ):
        plan = plan_job([str(tmp_path)], spec)
        contract = compile_contract(spec)
        found = find_duplicates(spec, plan, lambda parts, c=contract: [scan_partition(c, p) for p in parts])
        assert found.marks == marks and found.values == {ID: values}
        assert found.digest_of(plan.partitions[1]) is not None
    plain = plan_job([str(a)], SPEC)
    alone = find_duplicates(SPEC, plain, lambda parts: [scan_partition(compile_contract(SPEC), p) for p in parts])
    assert alone.marks == {} and alone.digest_of(plain.partitions[0]) is None  # no duplicates: records as before
