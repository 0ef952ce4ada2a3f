"""Manifests on the object store: list and read them all at once, write one with a known outcome."""

from __future__ import annotations

import logging
import posixpath

from fsspec.spec import AbstractFileSystem

from enrich.lease import put
from enrich.write import ShardManifest

log = logging.getLogger(__name__)
PUT_TRIES = 4


class ConcurrentWriterError(RuntimeError):
    """A manifest changed under us: another writer is committing to the same output."""


def read_manifests(fs: AbstractFileSystem, root: str) -> list[ShardManifest]:
    """Every manifest under ROOT/_manifests: one listing, then one concurrent read of them all
    (fsspec `cat` of many paths: s3fs fetches them together), not requests per shard."""
    try:
        listing = fs.ls(posixpath.join(root, "_manifests"), detail=False, refresh=True)
    except FileNotFoundError:
        return []
    names = [p for p in listing if p.endswith(".json")]
    found = fs.cat(names) if names else {}
    return [ShardManifest.model_validate_json(found[n]) for n in sorted(found)]


def read_manifest(fs: AbstractFileSystem, root: str, shard_id: str) -> ShardManifest | None:
    try:
        return ShardManifest.model_validate_json(fs.cat_file(posixpath.join(root, "_manifests", f"{shard_id}.json")))
    except FileNotFoundError:
        return None


def put_manifest(
    fs: AbstractFileSystem, root: str, manifest: ShardManifest, old: ShardManifest | None, run_id: str
) -> None:
    """THE commit: one atomic write of the manifest (create-if-absent for a first commit). On an
    error whose outcome is unknown, re-read (Iceberg): our commit id means it landed, the old
    one (or none) means try again, another one means a rival writer."""
    path = posixpath.join(root, "_manifests", f"{manifest.shard_id}.json")
    data = manifest.model_dump_json(indent=1).encode("utf-8")
    previous = old.commit_id if old is not None else None
    for attempt in range(PUT_TRIES):
        try:
            put(fs, path, data, create=old is None)
            return
        except FileExistsError:
            pass  # our own earlier try landed (lost response), or a rival's: read below
        except Exception as exc:  # noqa: BLE001 - unknown outcome; a crash (BaseException) passes
            if attempt == PUT_TRIES - 1:
                raise OSError(f"cannot commit {fs.unstrip_protocol(path)} after {PUT_TRIES} tries: "
                              f"{type(exc).__name__}: {exc}") from exc
            log.warning("manifest write for %s failed; checking whether it landed", manifest.source, exc_info=True)
        try:
            current = read_manifest(fs, root, manifest.shard_id)
        except Exception:  # noqa: BLE001 - cannot tell yet; try the write again
            continue
        if current is not None and current.commit_id == manifest.commit_id:
            return
        if current is not None and current.commit_id != previous:
            raise ConcurrentWriterError(
                f"{path}: committed by run {current.run_id} while this run ({run_id}) was "
                "committing it; only one driver may write an output"
            )
    raise RuntimeError(f"{path}: could not be written after {PUT_TRIES} tries")
