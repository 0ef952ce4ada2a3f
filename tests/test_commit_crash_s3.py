"""The crash enumeration of test_commit_crash on the real S3 API (moto via s3fs): every crash
point, each on a fresh bucket, recovered on the same store.

`make test` runs the --overwrite scenario here (it has the most operations: writes, a commit
over an existing manifest, GC of superseded files); the in-memory enumeration runs all three.
All three on S3 take about 12 minutes: `S3_CRASH_SCENARIOS=all pytest tests/test_commit_crash_s3.py`.
"""

from __future__ import annotations

import os
import uuid

import pytest
import s3fs

from tests.commit_fixtures import Crash, FaultyFS
from tests.crash_scenario import SCENARIOS, check_after_crash, check_final, listed_rows, prestate, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(s3_endpoint: str) -> s3fs.S3FileSystem:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    bucket = f"crash-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    fs.bucket = bucket  # type: ignore[attr-defined]
    return fs


S3_SCENARIOS = list(SCENARIOS) if os.environ.get("S3_CRASH_SCENARIOS") == "all" else ["overwrite"]


@pytest.mark.parametrize("kind", S3_SCENARIOS)
def test_every_crash_point_on_s3(store: s3fs.S3FileSystem, kind: str) -> None:
    spec = SCENARIOS[kind]
    root = f"{store.bucket}/{kind}-golden"  # type: ignore[attr-defined]
    fs = prestate(kind, store, root)
    run(fs, spec["fp"], spec["overwrite"], root=root, run="g")
    trace, golden = list(fs.ops), listed_rows(fs, root)
    assert sum(len(v) for v in golden.values()) == 8
    tried = 0
    for k in range(len(trace)):
        for mode in ("before", "after"):
            # A bucket per crash point: moto lists a prefix by scanning the whole bucket.
            bucket = f"crash-{uuid.uuid4().hex[:12]}"
            store.mkdir(bucket)
            root = f"{bucket}/out"
            fs = prestate(kind, store, root)
            fs.crash_at, fs.mode = k, mode
            with pytest.raises(Crash):
                run(fs, spec["fp"], spec["overwrite"], root=root, run="g")
            assert [op for op, _ in fs.ops] == [op for op, _ in trace[: k + 1]]
            check_after_crash(fs, root, spec["fps"])
            recovery = FaultyFS(store)  # the same bucket, faults off: a rerun after the crash
            run(recovery, spec["fp"], spec["overwrite"], root=root, run="h")
            check_final(recovery, root, golden)
            tried += 1
    print(f"s3 {kind}: {len(trace)} ops, {tried} crash points tried, each recovered")  # noqa: T201
    assert tried == 2 * len(trace)
