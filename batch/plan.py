"""The partition plan: input Parquet files -> independent partitions (runs of whole row groups of one file).

Planning reads only Parquet footers. It refuses, before anything is written, input that no partition could
score: no files, no rows, a file that is not Parquet, or a file whose schema broke (missing, extra or retyped
columns), naming the file and the column.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from inferline.core.errors import UserError
from inferline.core.files import fingerprint_files
from inferline.features.dataset import expand_paths
from inferline.features.parquet_reader import decode_dictionaries
from inferline.features.spec import PipelineSpec
from inferline.features.validation import refuse_repeated_names, validate_frame

__all__ = ["EmptyInput", "Partition", "Plan", "UnreadableInput", "plan_job"]


class UnreadableInput(UserError, ValueError):
    """An input file that is not readable Parquet."""

    docs = "tutorials/batch.md"


class EmptyInput(UserError, ValueError):
    """The input holds no rows to score."""

    docs = "tutorials/batch.md"


@dataclass(frozen=True)
class Partition:
    index: int
    file: str
    row_groups: tuple[int, ...]
    first_row: int  # the partition's first row, counted within its file
    rows: int
    file_sha256: str  # the file's content when planned: a commit counts only for the same content

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    def describe(self) -> str:
        groups = (
            f"row group {self.row_groups[0]}"
            if len(self.row_groups) == 1
            else f"row groups {self.row_groups[0]}-{self.row_groups[-1]}"
        )
        return f"{self.name} ({self.file}, {groups}, rows {self.first_row}-{self.first_row + self.rows - 1})"


@dataclass
class Plan:
    partitions: list[Partition]
    fingerprint: dict[str, Any]
    partition_rows: int

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def files(self) -> list[str]:
        return sorted({p.file for p in self.partitions})

    def digest(self) -> str:
        """The plan's geometry (files, row groups, rows), not the files' content: a file fixed in place keeps
        the job, and only its own partitions run again."""
        geometry = [{k: v for k, v in asdict(p).items() if k != "file_sha256"} for p in self.partitions]
        body = json.dumps(geometry, sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()


def _check_schema(path: Path, schema: pa.Schema, spec: PipelineSpec) -> None:
    """Run the pipeline's structural checks on the file's empty frame: the same checks each partition repeats."""
    frame = decode_dictionaries(schema.empty_table()).to_pandas()  # a dictionary column is read as its values
    validate_frame(frame.drop(columns=[spec.label], errors="ignore"), spec, source=str(path), include_label=False)


def plan_job(inputs: list[str] | list[Path], spec: PipelineSpec, partition_rows: int = 250_000) -> Plan:
    if partition_rows < 1:
        raise ValueError(f"partition_rows must be >= 1, got {partition_rows}")
    paths = expand_paths(inputs)
    partitions: list[Partition] = []
    fingerprint = fingerprint_files(paths)
    digests = {p: f["sha256"] for p, f in zip(sorted(paths), fingerprint["files"], strict=True)}
    for path in paths:
        try:
            meta = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UnreadableInput(
                f"{path} is not a readable Parquet file ({exc}); remove it from --input or re-export it"
            ) from exc
        refuse_repeated_names(path, meta.schema_arrow.names)
        _check_schema(path, meta.schema_arrow, spec)
        group: list[int] = []
        first = rows = offset = 0
        for rg in range(meta.num_row_groups):
            n = meta.metadata.row_group(rg).num_rows
            if n == 0:
                continue
            if not group:
                first = offset
            group.append(rg)
            rows += n
            offset += n
            if rows >= partition_rows:
                partitions.append(
                    Partition(len(partitions), str(path.resolve()), tuple(group), first, rows, digests[path])
                )
                group, rows = [], 0
        if group:
            partitions.append(Partition(len(partitions), str(path.resolve()), tuple(group), first, rows, digests[path]))
    if not partitions:
        raise EmptyInput(
            f"the input {[str(p) for p in paths]} holds 0 rows: nothing to score. No output was written or "
            "changed; check the upstream export"
        )
    return Plan(partitions=partitions, fingerprint=fingerprint, partition_rows=partition_rows)
