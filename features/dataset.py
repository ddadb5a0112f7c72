"""Reading raw data files through validation: valid rows flow on, bad rows go to quarantine with reasons."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from inferline.features.artifacts import atomic_write_parquet, fingerprint_files
from inferline.features.errors import PathNotFound, UserError
from inferline.features.spec import PipelineSpec
from inferline.features.validation import ValidationResult, validate_frame

__all__ = ["DatasetReport", "DuplicateIds", "InvalidShareExceeded", "expand_paths", "load_validated", "read_raw"]


class DuplicateIds(UserError, ValueError):
    """The same id in more than one row of a data set."""


class InvalidShareExceeded(UserError, ValueError):
    """Too many rows failed validation for the stage to trust the rest."""


@dataclass
class DatasetReport:
    files: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_in(self) -> int:
        return sum(f["rows_in"] for f in self.files)

    @property
    def rows_valid(self) -> int:
        return sum(f["rows_valid"] for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f["rows_quarantined"] for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "files": self.files,
            "fingerprint": self.fingerprint.get("sha256"),
        }


def expand_paths(patterns: list[str] | list[Path]) -> list[Path]:
    """Files named directly, by glob, or as directories (every ``*.parquet`` inside), sorted, no duplicates."""
    out: set[Path] = set()
    for pattern in patterns:
        p = Path(pattern)
        if p.is_dir():
            out.update(p.glob("*.parquet"))
        elif any(ch in str(pattern) for ch in "*?["):
            out.update(Path(x) for x in glob.glob(str(pattern)))
        elif p.exists():
            out.add(p)
        else:
            raise PathNotFound(
                f"no such data file or directory: {str(pattern)!r}; expected Parquet/CSV files, globs or "
                "directories of *.parquet files: check the path"
            )
    if not out:
        raise PathNotFound(
            f"no Parquet files matched {[str(p) for p in patterns]}; expected at least one *.parquet file (a "
            "directory is searched for *.parquet, not recursively): generate data with `inferline generate`"
        )
    return sorted(out)


def read_raw(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        # undecodable bytes survive as lone surrogates; validation reports them per row as <column>:invalid_utf8
        return pd.read_csv(path, encoding="utf-8", encoding_errors="surrogateescape")
    return pd.read_parquet(path)


def load_validated(
    paths: list[Path],
    spec: PipelineSpec,
    quarantine_dir: Path | None = None,
    include_label: bool = True,
    max_invalid_share: float = 0.05,
) -> tuple[pd.DataFrame, DatasetReport]:
    """Validate every file; write each file's quarantine beside the stage output; fail on too many bad rows."""
    report = DatasetReport(fingerprint=fingerprint_files(paths))
    parts: list[pd.DataFrame] = []
    results: list[tuple[Path, ValidationResult]] = []
    for path in paths:
        raw = read_raw(path)
        if not include_label:  # scoring input may carry the label; it is not used (as in the batch job)
            raw = raw.drop(columns=[spec.label], errors="ignore")
        result = validate_frame(raw, spec, source=str(path), include_label=include_label)
        results.append((path, result))
        parts.append(result.valid)
        id_col = spec.id_column.name if spec.id_column else None
        samples = [
            {"row_id": str(row[id_col]) if id_col else None, "reasons": row["_reasons"]}
            for row in result.quarantine.head(3).to_dict("records")
        ]
        report.files.append({"file": str(path), **result.summary(), "samples": samples})
        if quarantine_dir is not None and result.rows_quarantined:
            atomic_write_parquet(Path(quarantine_dir) / f"{path.stem}.quarantine.parquet", result.quarantine)
    total_in = report.rows_in
    share = report.rows_quarantined / total_in if total_in else 0.0
    if share > max_invalid_share:
        worst = max(results, key=lambda pr: pr[1].invalid_share)
        raise InvalidShareExceeded(
            f"{report.rows_quarantined} of {total_in} rows ({share:.1%}) failed validation, above the allowed "
            f"{max_invalid_share:.1%}; worst file {worst[0]} ({worst[1].invalid_share:.1%}, reasons "
            f"{worst[1].reason_counts}). Inspect the quarantine, fix upstream, or raise --max-invalid-share."
        )
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if spec.id_column is not None and len(frame):
        dup = frame[spec.id_column.name].duplicated()
        if dup.any():
            raise DuplicateIds(
                f"{int(dup.sum())} {spec.id_column.name} values repeat across files {[str(p) for p in paths]}; "
                "ids must be unique across a data set: deduplicate upstream or pass each file once"
            )
    return frame, report
