"""The batch job's duplicate pre-pass: values of unique columns repeated across partitions.

Each partition is scored alone, so no partition can see that its id also occurs in another. After planning and
before scheduling, the job reads the unique columns of every partition (Parquet column projection: a few columns
of each row group, never the rest), in the canonical form validation compares (``features.duplicates``: NFC text
for columns declared ``normalization="nfc"``), and finds the values that occur more than once in the whole input,
within one partition or across several. The column's policy (``Column.duplicates``) picks the copies to
quarantine over the input in plan order (files sorted, row groups and rows in file order): every copy
(``"all"``), or every copy after the first (``"all_but_first"``).

Each partition is handed the row positions of its own copies (``Duplicates.rows_of``); it quarantines them as
``<column>:duplicate`` beside the copies the contract finds within it (the same rows: each carries the reason
once). So a partition's result stays a pure function of (partition, release, input set): a retry writes the same
bytes. Its commit record names a digest of those positions (``Duplicates.digest_of``): when another file changes
which of its rows are copies, its commit no longer counts and it runs again. The job identity does not name the
duplicates: like the files' content, they are checked per partition, so a job whose input has none keeps the
identity (and the commits) it had before this pass existed.

Where it runs: a small input (``JobConfig.scan_local_rows`` rows or fewer) is scanned on the client, where
reading a few columns costs less than starting a cluster and shipping tasks; a larger one as one Dask task per
partition, the reads and hashing spread over the workers. Either way the client gathers 16 bytes per row
(``features.duplicates.digests``), not the values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.batch.plan import Partition, Plan
from inferline.features.contract import Contract
from inferline.features.duplicates import canonical_values, copies, digests, repeated_values, unique_columns
from inferline.features.parquet_reader import read_parquet
from inferline.features.spec import PipelineSpec
from inferline.features.validation import FileLevelError

__all__ = ["Duplicates", "Scan", "find_duplicates", "scan_partition"]

EXAMPLES = 3  # repeated values the report shows per column

# per unique column: (present [n] bool, keys [n, 2] uint64) over the partition's rows
Scan = dict[str, tuple[np.ndarray, np.ndarray]]


def scan_partition(contract: Contract, part: Partition) -> Scan:
    """One partition's unique columns as comparison keys (the scoring input has no label: it is not scanned).
    A partition that cannot be read holds no keys here: it fails alone when it is scored, naming its file."""
    columns = unique_columns(contract.spec, include_label=False)
    if not columns:
        return {}
    try:
        frame = read_parquet(Path(part.file), part.row_groups, columns=[c.name for c in columns])
    except FileLevelError:
        return {c.name: (np.zeros(part.rows, dtype=bool), np.zeros((part.rows, 2), dtype=np.uint64)) for c in columns}
    values = canonical_values(contract, frame, include_label=False)
    out: Scan = {}
    for c in columns:
        v = values[c.name]
        out[c.name] = (np.fromiter((x is not None for x in v), dtype=bool, count=len(v)), digests(v, c.kind))
    return out


@dataclass
class Duplicates:
    """What the pre-pass found: per partition and unique column, the rows (positions within the partition) to
    quarantine as ``<column>:duplicate``; per column, the values repeated and the copies quarantined."""

    policy: dict[str, str] = field(default_factory=dict)
    values: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    marks: dict[int, dict[str, tuple[int, ...]]] = field(default_factory=dict)

    def rows_of(self, part: Partition) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The partition's copies per column, in spec order (part of its task: small, picklable, hashable)."""
        return tuple(sorted(self.marks.get(part.index, {}).items()))

    def digest_of(self, part: Partition) -> str | None:
        """A digest of the partition's copies for its commit record; None when it holds none (as the records of
        jobs before this pass: their commits still count)."""
        rows = self.rows_of(part)
        if not rows:
            return None
        return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()

    def as_dict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The report's section: per column the policy, values repeated, rows quarantined (from the committed
        partitions' records) and a few examples of the values (as the partitions recorded them)."""
        out: dict[str, Any] = {}
        ordered = sorted(records, key=lambda r: r["partition"])
        for name, policy in self.policy.items():
            reason = f"{name}:duplicate"
            examples: list[str] = []
            for record in ordered:
                for value in record.get("duplicate_examples", {}).get(name, []):
                    if value not in examples and len(examples) < EXAMPLES:
                        examples.append(value)
            out[name] = {
                "policy": policy,
                "values": self.values.get(name, 0),
                "rows_quarantined": sum(r["reasons"].get(reason, 0) for r in records),
                "examples": examples,
            }
        return out


def find_duplicates(spec: PipelineSpec, plan: Plan, scan: Callable[[list[Partition]], list[Scan]]) -> Duplicates:
    """Every partition's keys (``scan``: on the client or on the cluster, one result per partition in plan
    order) -> the copies each partition quarantines under its columns' policies."""
    columns = unique_columns(spec, include_label=False)
    found = Duplicates(policy={c.name: c.duplicates for c in columns})
    if not columns:
        return found
    scans = scan(plan.partitions)
    sizes = [p.rows for p in plan.partitions]
    bounds = np.cumsum([0, *sizes])
    for c in columns:
        present = np.concatenate([s[c.name][0] for s in scans])
        keys = np.concatenate([s[c.name][1] for s in scans])
        frame = pd.DataFrame({"a": keys[:, 0], "b": keys[:, 1]})
        chosen = copies(frame, present, c.duplicates)
        found.values[c.name] = repeated_values(frame, present) if chosen.any() else 0
        found.rows[c.name] = int(chosen.sum())
        for part in plan.partitions:
            rows = np.flatnonzero(chosen[bounds[part.index] : bounds[part.index + 1]])
            if len(rows):
                found.marks.setdefault(part.index, {})[c.name] = tuple(rows.tolist())
    return found


def scan_task(pipeline: str, state_path: str, part: Partition) -> Scan:
    """``scan_partition`` as a Dask task: the release's contract is compiled once per worker process."""
    from inferline.batch.partition import _contract

    return scan_partition(_contract(pipeline, state_path), part)
