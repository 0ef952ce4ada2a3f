"""Model location: a hub id or local folder is used as is; an s3:// prefix is copied once
per node to local disk (a file lock makes concurrent actors on one node share the copy)."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from enrich.storage import filesystem

CACHE_ROOT = Path(os.environ.get("ENRICH_MODEL_CACHE", Path.home() / ".cache" / "enrich" / "models"))


def is_remote(model: str) -> bool:
    return "://" in model and not model.startswith("file://")


def local_model_path(model: str, s3_endpoint: str | None = None) -> str:
    """A path or hub id vLLM and transformers can load on this node."""
    if not is_remote(model):
        return model.removeprefix("file://")
    target = CACHE_ROOT / hashlib.sha256(model.encode("utf-8")).hexdigest()[:16]
    done = target / ".enrich-copy-complete"
    if done.exists():
        return str(target)
    target.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one copy per node, however many actors start
        if not done.exists():
            fs, path = filesystem(model, s3_endpoint)
            for src in fs.find(path):
                rel = src[len(path.rstrip("/")) + 1 :]
                dest = target / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(src, str(dest))
            if not any(target.iterdir()):
                raise FileNotFoundError(f"{model}: no model files found")
            done.write_text(model)
    return str(target)
