"""Model location: a hub id or local folder is used as is; an s3:// prefix is copied once
per node to local disk (a file lock makes concurrent actors on one node share the copy).
Prepare tasks need only the tokenizer: `local_tokenizer_path` copies just its files."""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enrich.storage import filesystem

# What AutoTokenizer.from_pretrained reads: the tokenizer itself (fast JSON, BPE vocab and
# merges, sentencepiece/tiktoken models), its config and special tokens, the chat template,
# and config.json (the model type picks the tokenizer class when tokenizer_config names
# none). Weights are never among them.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "*.model", "*.tiktoken", "tokenizer.*",
    "chat_template.json", "chat_template.jinja", "additional_chat_templates/*", "config.json",
)


def cache_root() -> Path:
    return Path(os.environ.get("ENRICH_MODEL_CACHE", Path.home() / ".cache" / "enrich" / "models"))


def is_remote(model: str) -> bool:
    return "://" in model and not model.startswith("file://")


def local_model_path(model: str, s3_endpoint: str | None = None) -> str:
    """A path or hub id vLLM and transformers can load on this node (every model file)."""
    return _local_copy(model, s3_endpoint, lambda rel: True, "")


def local_tokenizer_path(model: str, s3_endpoint: str | None = None) -> str:
    """A path or hub id AutoTokenizer can load: for an s3:// model, a local copy of its
    tokenizer files only (kilobytes to megabytes, not the weights' gigabytes)."""
    return _local_copy(model, s3_endpoint, is_tokenizer_file, "tokenizer")


def is_tokenizer_file(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in TOKENIZER_FILES)


def _local_copy(model: str, s3_endpoint: str | None, wanted: Callable[[str], bool], kind: str) -> str:
    if not is_remote(model):
        return model.removeprefix("file://")
    fs, path = filesystem(model, s3_endpoint)
    root = path.rstrip("/")
    listing: dict[str, Any] = {p: i for p, i in fs.find(path, detail=True).items() if wanted(p[len(root) + 1 :])}
    if not listing:
        raise FileNotFoundError(f"{model}: no {kind or 'model'} files found")
    # Keyed by the objects' etags too: a model re-uploaded under the same prefix is re-copied.
    identity = [model, kind] + [f"{p}:{i.get('size')}:{i.get('ETag', i.get('mtime'))}" for p, i in sorted(listing.items())]
    target = cache_root() / hashlib.sha256("\n".join(identity).encode("utf-8")).hexdigest()[:16]
    done = target / ".enrich-copy-complete"
    if done.exists():
        return str(target)
    target.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one copy per node, however many actors start
        if not done.exists():
            for src in sorted(listing):
                dest = target / src[len(root) + 1 :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(src, str(dest))
            done.write_text(model)
    return str(target)
