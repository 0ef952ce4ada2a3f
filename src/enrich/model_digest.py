"""Model digest: which model files a run used, by listing (etag or mtime, and size), not by
hashing content. Part of the fingerprint, so a model re-uploaded under the same path or
prefix is never mixed with outputs of the old one on resume."""

from __future__ import annotations

import hashlib
import json
import os

from enrich.storage import filesystem

# What tells one version of a file from another in a listing: S3's ETag (a content hash for
# single-part uploads), else the local modification time.
_VERSION_KEYS = ("ETag", "etag", "mtime", "LastModified")


def model_digest(model: str, s3_endpoint: str | None = None) -> str | None:
    """sha256 over (relative path, size, version) of the model's files; None for a model
    that is not a path or URL (a hub id: its revision is in the fingerprint already)."""
    if "://" not in model and not os.path.exists(os.path.expanduser(model)):
        return None
    fs, path = filesystem(model, s3_endpoint)
    try:
        listing = fs.find(path, detail=True) if fs.isdir(path) else {path: fs.info(path)}
    except FileNotFoundError:
        return None
    entries = []
    for name, info in sorted(listing.items()):
        version = next((str(info[k]).strip('"') for k in _VERSION_KEYS if info.get(k) is not None), "")
        entries.append([name[len(path):], int(info.get("size") or 0), version])
    return hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()[:16]
