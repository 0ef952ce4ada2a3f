"""cluster.yaml passes Ray's own cluster-launcher validation, offline.

`ray up` runs `prepare_config` (merge with the provider defaults, docker checks, per-type
worker limits) and then `validate_config` (ray-schema.json plus cross-field checks) before
its first cloud call; these tests run exactly those two steps, with sockets disabled.
"""

from __future__ import annotations

import copy
import re
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
PYPROJECT = REPO / "pyproject.toml"

Config = dict[str, Any]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test here that tries to reach the network (AWS included)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def ray_validate(config: Config) -> Config:
    """Run `ray up`'s offline checks on a copy of `config`; return the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def pyproject() -> dict[str, Any]:
    """The parsed pyproject.toml."""
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def requirement(specs: list[str], name: str) -> Requirement:
    """The requirement named `name` in a list of PEP 508 strings."""
    matches = [Requirement(s) for s in specs if Requirement(s).name == name]
    assert len(matches) == 1, f"expected one {name!r} requirement in {specs}"
    return matches[0]


@pytest.fixture
def raw() -> Config:
    """cluster.yaml as written."""
    config = yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


@pytest.fixture
def prepared(raw: Config) -> Config:
    """cluster.yaml after Ray's defaults merge and validation."""
    return ray_validate(raw)


def test_ray_accepts_cluster_yaml(prepared: Config) -> None:
    """Ray's schema and cross-field checks pass, and defaults did not replace our types."""
    assert prepared["cluster_name"] == "enrich"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["cache_stopped_nodes"] is False
    assert set(prepared["available_node_types"]) == {"head", "gpu_worker"}
    assert prepared["idle_timeout_minutes"] == 10


def test_head_takes_no_work(prepared: Config) -> None:
    """The head advertises zero CPUs and never scales."""
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    assert head["min_workers"] == head["max_workers"] == 0


def test_gpu_workers_autoscale_from_zero(prepared: Config) -> None:
    """Some worker type has a GPU, starts at zero and can scale up within the global cap."""
    workers = {
        name: t
        for name, t in prepared["available_node_types"].items()
        if name != prepared["head_node_type"]
    }
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu, f"no GPU worker type in {sorted(workers)}"
    for node_type in gpu:
        assert node_type["min_workers"] == 0
        assert 0 < node_type["max_workers"] <= prepared["max_workers"]
        assert node_type["resources"]["CPU"] >= 1


def test_docker_image_is_a_pinned_cuda_image(raw: Config) -> None:
    """The image has an exact version tag (never `latest`) and a CUDA build; which vLLM the
    nodes run is checked in tests/test_versions.py."""
    repo, sep, tag = raw["docker"]["image"].rpartition(":")
    assert sep and repo, raw["docker"]["image"]
    assert re.match(r"v?\d+\.\d+\.\d+", tag), f"image tag {tag!r} is not a pinned version (never 'latest')"
    assert repo.endswith("vllm-openai") or "-cu" in tag, f"{raw['docker']['image']} is not a CUDA image"
    assert raw["docker"]["container_name"]
    assert any("--shm-size" in opt for opt in raw["docker"]["run_options"])


def test_setup_installs_the_project(prepared: Config) -> None:
    """Every node gets the synced working tree installed with the gpu extra and Ray pin."""
    assert prepared["file_mounts"]["~/enrich"] == "."
    ray_pin = requirement(pyproject()["project"]["dependencies"], "ray")
    # prepare_config merged setup_commands into the head's and workers' lists.
    for key in ("head_setup_commands", "worker_setup_commands"):
        installs = [c for c in prepared[key] if "pip install" in c]
        assert any(
            re.search(r'-e "\$HOME/enrich\[gpu\]"', c) for c in installs
        ), f"{key} does not install the project: {installs}"
        assert any(f'"{ray_pin}"' in c for c in installs), f"{key} lacks {ray_pin}"


def test_ray_starts_with_token_auth(prepared: Config) -> None:
    """Head and workers start Ray with RAY_AUTH_MODE=token and get the shared token."""
    head = " ".join(prepared["head_start_ray_commands"])
    workers = " ".join(prepared["worker_start_ray_commands"])
    assert "ray start --head --port=6379" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers
    for commands in (prepared["head_start_ray_commands"], prepared["worker_start_ray_commands"]):
        assert commands[0] == "ray stop"
        starts = [c for c in commands if "ray start" in c]
        assert starts and all("export RAY_AUTH_MODE=token;" in c for c in starts), starts
        from enrich.engine_stage import RAY_CHILD_CLEANUP_ENV

        for name, value in RAY_CHILD_CLEANUP_ENV.items():  # what the embedded Ray gets, the cluster too
            assert all(f"{name}={value}" in c for c in starts), (name, starts)
        assert not any("RAY_AUTH_MODE=disabled" in c for c in commands)
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def _set(path: list[str], value: Any) -> Callable[[Config], None]:
    """A mutation that sets config[path...] = value."""

    def mutate(config: Config) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(_set(["max_wokers"], 8), jsonschema.ValidationError, id="unknown-top-level-key"),
        pytest.param(_set(["max_workers"], "eight"), jsonschema.ValidationError, id="wrong-type"),
        pytest.param(
            _set(["docker", "imag"], "rayproject/ray:2.60.0-py312-cu128"),
            jsonschema.ValidationError,
            id="unknown-docker-key",
        ),
        pytest.param(
            _set(["available_node_types", "gpu_worker", "resources", "GPU"], 0.5),
            jsonschema.ValidationError,
            id="fractional-node-resource",
        ),
        pytest.param(_set(["head_node_type"], "no_such_type"), ValueError, id="unknown-head-type"),
        pytest.param(
            _set(["available_node_types", "gpu_worker", "min_workers"], 9),
            ValueError,
            id="min-workers-over-global-max",
        ),
    ],
)
def test_validation_rejects_broken_configs(
    raw: Config, mutate: Callable[[Config], None], error: type[Exception]
) -> None:
    """The same checks fail on mutated copies, so the passing tests above mean something."""
    ray_validate(raw)  # the unmutated config passes...
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(error):  # ...and each single mutation does not.
        ray_validate(broken)
