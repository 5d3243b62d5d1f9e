"""Writes parquet files with pyarrow, the writer behind `datasets` and the Hub's parquet exports.

Usage: parquet_write.py SPEC.json OUT_DIR

SPEC is a list of files: {"path": "data/train-00000-of-00002.parquet", "compression": "zstd",
"row_group_size": 2, "columns": {"messages": [[{"role": ..., "content": ...}, ...], ...]}}.
pyarrow infers the column types from the values (a list of dicts becomes
list<struct<role: string, content: string>>, as `Dataset.to_parquet` writes chats). Prints a JSON
summary: per file, its row groups, compression and the Arrow schema as pyarrow reads it back.
"""

import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    spec_path, out_dir = sys.argv[1], sys.argv[2]
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    summary = []
    for entry in spec:
        path = os.path.join(out_dir, entry["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        table = pa.table(entry["columns"])
        pq.write_table(
            table,
            path,
            compression=entry.get("compression", "snappy"),
            row_group_size=entry.get("row_group_size"),
        )
        meta = pq.ParquetFile(path).metadata
        summary.append(
            {
                "path": entry["path"],
                "rows": meta.num_rows,
                "row_groups": meta.num_row_groups,
                "compression": meta.row_group(0).column(0).compression,
                "schema": str(pq.read_schema(path)),
            }
        )
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
