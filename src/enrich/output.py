"""Reading an output: exactly the committed rows, through the manifests.

    import enrich
    ds = enrich.read_output("s3://bucket/out")            # a pyarrow Dataset
    ds.to_table() / ds.to_batches() / pl.scan_pyarrow_dataset(ds) / duckdb.arrow(ds)
    enrich.read_output("s3://bucket/out", task="address")  # one task of a multi-task run
    enrich.read_output(OUTPUT, rejects=True)               # the rejects table

Manifests are the truth: a `part-*` file no manifest lists (a crashed or duplicate attempt
that the next run's clean-up has not removed yet) is never read.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.dataset as pads

from enrich.manifests import read_manifests
from enrich.storage import filesystem, join
from enrich.write import ShardManifest, arrow_fs


def manifests(output: str, s3_endpoint: str | None = None) -> list[ShardManifest]:
    """The committed shards of one task's output folder (one listing, one concurrent read)."""
    fs, root = filesystem(output, s3_endpoint)
    return read_manifests(fs, root)


def tasks(output: str, s3_endpoint: str | None = None) -> list[str]:
    """Task folders of a multi-task output (those with manifests); [] for a one-task output."""
    fs, root = filesystem(output, s3_endpoint)
    if fs.exists(join(root, "_manifests")):
        return []
    if not fs.exists(root):
        raise FileNotFoundError(f"{output}: no such output")
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)
                  if fs.exists(join(p, "_manifests")))


def read_output(
    output: str, task: str | None = None, rejects: bool = False, s3_endpoint: str | None = None,
    schema: pa.Schema | None = None,
) -> pads.Dataset:
    """A pyarrow Dataset of exactly the manifest-listed files of `output` (enriched rows, or
    the rejects with `rejects=True`). A multi-task output needs `task` (its task label)."""
    if task is None:
        labels = tasks(output, s3_endpoint)
        if labels:
            raise ValueError(f"{output} holds several tasks ({', '.join(labels)}): pass task=")
    else:
        output = output.rstrip("/") + "/" + task
    fs, root = filesystem(output, s3_endpoint)
    listed = manifests(output, s3_endpoint)
    files = [join(root, f) for m in listed for f in (m.reject_files if rejects else m.files)]
    if not files and schema is None:
        schema = pa.schema([])
    return pads.dataset(files, schema=schema, format="parquet", filesystem=arrow_fs(fs))
