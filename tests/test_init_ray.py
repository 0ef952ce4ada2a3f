"""The embedded Ray a local run starts: no dashboard, no runtime_env, the environment inherited."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # starts a Ray cluster

PROBE = """
import json, os
import ray
from enrich.config import JobConfig
from enrich.pipeline import init_ray

init_ray(JobConfig(input="in", output="out", model="m"))

@ray.remote(num_cpus=0)
def worker_env() -> list:
    return [os.environ.get("VLLM_LOGGING_LEVEL"), os.environ.get("RAY_process_group_cleanup_enabled")]

print(json.dumps({"worker": ray.get(worker_env.remote()), "dashboard": ray._private.worker.get_dashboard_url(),
                  "runtime_env": ray.get_runtime_context().runtime_env}))
ray.shutdown()
"""


def test_an_embedded_run_starts_ray_without_dashboard_and_workers_inherit_its_env() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["VLLM_LOGGING_LEVEL"] = "ERROR"  # what enrich.logs sets unless --log-level DEBUG
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["worker"] == ["ERROR", "1"], seen  # the level and the raylet's cleanup setting reach workers
    assert not seen["dashboard"], seen  # a batch job does not need it; with runtime_env, ~1.9 s of start-up
    assert not seen["runtime_env"], seen
