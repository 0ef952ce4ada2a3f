"""Session fixtures: the tiny Qwen3 checkpoint, a real S3 server on loopback, embedded Ray."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from enrich.eval.gold import shared_data

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data()  # beside the clone; ENRICH_SHARED_DATA points elsewhere (a worktree)
ADDRESS_GOLD = SHARED_DATA / "address" / "test_with_system.jsonl"


def in_ci() -> bool:
    """CI sets CI=true (as GitHub Actions and .ci/run do); there the shared data is present."""
    return os.environ.get("CI", "").lower() == "true"


def shared_file(relative: str) -> Path:
    """A file of the shared gold sets. Absent: the test skips on a laptop without the data,
    but fails in CI, where the data is provisioned and a missing file is a real fault."""
    path = SHARED_DATA / relative
    if not path.is_file():
        message = f"shared gold set {path} not found"
        if in_ci():
            pytest.fail(f"{message}, and CI=true: the shared data must be present in CI")
        pytest.skip(f"{message} (shared data absent)")
    return path

# Fake credentials for the loopback S3 server, set before any Ray worker starts so the
# workers inherit them exactly as production workers inherit real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random-weight Qwen3 checkpoint (built once, cached under .cache/)."""
    import fcntl

    from enrich.tiny_checkpoint import build_tiny_checkpoint

    cache = REPO / ".cache"
    cache.mkdir(exist_ok=True)
    # `make test` runs two pytest workers: the first builds, the other waits on the lock.
    with open(cache / "tiny-qwen3.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_tiny_checkpoint(cache / "tiny-qwen3")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server (moto) on 127.0.0.1, reached through s3fs like production."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_ray() -> Iterator[None]:
    """Each test that starts the embedded Ray stops it, so the next one's workers start with
    that test's environment (credentials, cache folders) like a fresh job would."""
    yield
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def address_texts(n: int, start: int = 0) -> list[str]:
    """Raw address strings from the shared gold set (skips the test when absent)."""
    import json

    lines = shared_file("address/test_with_system.jsonl").read_text(encoding="utf-8").splitlines()[start : start + n]
    return [json.loads(line)["messages"][1]["content"] for line in lines]
