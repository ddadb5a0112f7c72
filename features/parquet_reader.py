"""Reading Parquet input: every stage reads a Parquet file (or some of its row groups and columns) through
``read_parquet``, which turns every way a file can be unreadable into a ``FileLevelError`` naming it, refuses
repeated column names and decodes dictionary-encoded columns to their values (``decode_dictionaries``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from inferline.features.validation import FileLevelError, refuse_repeated_names, unreadable_file

__all__ = ["decode_dictionaries", "read_parquet"]


def read_parquet(path: Path, row_groups: Sequence[int] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file (or some of its row groups and columns) as a frame, with pyarrow; every stage reads Parquet
    input through here. Contract:

    - a file that cannot be read (truncated, not Parquet, a corrupt page) is a ``FileLevelError`` naming it. Pages
      are decoded on the calling thread (``use_threads=False``): pyarrow's threaded decode of a corrupt page raised,
      then aborted the process at exit now and then (``terminate called without an active exception``, exit 134:
      26 of 40 runs of ``inferline validate`` on the corrupt-page file of tests/system/test_defects.py; 0 of 40 on the
      calling thread), because decode tasks were still in flight. Page checksums are verified where the
      writer stored them (``page_checksum_verification``);
    - repeated column names are refused, naming them (a frame cannot hold two columns of one name);
    - dictionary-encoded columns (pandas categoricals, Arrow dictionary arrays) are decoded to their values: a
      dictionary is how the column was stored, not what the data is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as file:
            refuse_repeated_names(path, file.schema_arrow.names)
            if row_groups is None:
                table = file.read(columns=columns, use_threads=False)
            else:
                table = file.read_row_groups(list(row_groups), columns=columns, use_threads=False)
            table = decode_dictionaries(table)
            return table.to_pandas(use_threads=False)
    except (OSError, ValueError, pa.ArrowException) as exc:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(exc, FileLevelError):
            raise
        raise unreadable_file(path, "Parquet", exc, "truncated, or a page is corrupt; re-export or re-copy it") from exc


def decode_dictionaries(table: Any) -> Any:
    """A pyarrow table (or an empty one made from a schema) with each dictionary column cast to its value type."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, f.type.value_type, f.nullable, f.metadata) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    if all(a is b for a, b in zip(fields, table.schema, strict=True)):
        return table
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
