"""Model location: a hub id or local folder is used as is; an s3:// prefix is copied once
per node to local disk (a file lock makes concurrent actors on one node share the copy)."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from enrich.storage import filesystem



def cache_root() -> Path:
    return Path(os.environ.get("ENRICH_MODEL_CACHE", Path.home() / ".cache" / "enrich" / "models"))


def is_remote(model: str) -> bool:
    return "://" in model and not model.startswith("file://")


def local_model_path(model: str, s3_endpoint: str | None = None) -> str:
    """A path or hub id vLLM and transformers can load on this node."""
    if not is_remote(model):
        return model.removeprefix("file://")
    fs, path = filesystem(model, s3_endpoint)
    listing = fs.find(path, detail=True)
    if not listing:
        raise FileNotFoundError(f"{model}: no model files found")
    # Keyed by the objects' etags too: a model re-uploaded under the same prefix is re-copied.
    identity = [model] + [f"{p}:{i.get('size')}:{i.get('ETag', i.get('mtime'))}" for p, i in sorted(listing.items())]
    target = cache_root() / hashlib.sha256("\n".join(identity).encode("utf-8")).hexdigest()[:16]
    done = target / ".enrich-copy-complete"
    if done.exists():
        return str(target)
    target.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one copy per node, however many actors start
        if not done.exists():
            for src in sorted(listing):
                rel = src[len(path.rstrip("/")) + 1 :]
                dest = target / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(src, str(dest))
            done.write_text(model)
    return str(target)
