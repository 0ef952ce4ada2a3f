"""Unit tests for enrich.cli: options generated from the config models, specs, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from enrich.cli import UsageError, build_parser, config_from_args, main
from enrich.config import EngineConfig, JobConfig, SamplingConfig, TaskOptions

REPO = Path(__file__).resolve().parents[1]
BASE = ["run", "--input", "/data/in", "--output", "/data/out", "--model", "m"]


def squash(text: str) -> str:
    """Text without whitespace, so argparse's line wrapping does not matter."""
    return "".join(text.split())


def run_help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def config(*flags: str) -> JobConfig:
    return config_from_args(build_parser().parse_args([*BASE, *flags]))


# ---------------------------------------------------------------- --help
def _fields() -> list[tuple[str, str]]:
    models: list[type[BaseModel]] = [JobConfig, TaskOptions, EngineConfig, SamplingConfig]
    return [
        (name, field.description or "")
        for model in models
        for name, field in model.model_fields.items()
        if name not in ("task_options", "engine", "sampling", "tasks")  # tasks: job spec only
    ]


@pytest.mark.parametrize(("name", "description"), _fields(), ids=[n for n, _ in _fields()])
def test_help_lists_every_field(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str, description: str
) -> None:
    """Each config field is a --flag in `enrich run --help`, with its description."""
    out = run_help(capsys, monkeypatch)
    flag = "--" + name.replace("_", "-")
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out), f"{flag} not in help"
    assert description, f"{name} has no description"
    assert squash(description) in squash(out)


def test_help_details(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults, required markers, bool negations, choices and the nested groups show up."""
    out = squash(run_help(capsys, monkeypatch))
    assert squash("Rows per batch handed to an engine actor. (default: 64)") in out
    assert squash("Output prefix (local folder or s3://...). (required)") in out
    assert "--enforce-eager,--no-enforce-eager" in out
    assert "--overwrite,--no-overwrite" in out
    assert "{auto,parquet,jsonl}" in out
    assert squash(EngineConfig.__doc__ or "") in out and squash(SamplingConfig.__doc__ or "") in out
    assert "--spec" in out


def test_help_via_console_script() -> None:
    """The installed `enrich` entry point answers --help quickly, without importing Ray."""
    exe = Path(sys.executable).parent / "enrich"
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    result = subprocess.run([str(exe), "run", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--batch-size" in result.stdout and "--max-tokens" in result.stdout


def test_tasks_and_help_do_not_import_ray() -> None:
    """`--help` and `tasks` stay fast: neither Ray nor vLLM is imported."""
    code = (
        "import sys, contextlib, io\n"
        "from enrich.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['tasks'])\n"
        "print(sorted(m for m in ('ray', 'vllm', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- flags -> config
def test_flags_map_to_nested_config() -> None:
    """Flat flags land in the nested engine/sampling settings; the rest keep their defaults."""
    cfg = config("--batch-size", "8", "--temperature", "0.5")
    assert cfg.engine.batch_size == 8
    assert cfg.sampling.temperature == 0.5
    assert (cfg.input, cfg.output, cfg.model) == ("/data/in", "/data/out", "m")
    assert cfg.engine.model_dump() == {**EngineConfig().model_dump(), "batch_size": 8}
    assert cfg.sampling.model_dump() == {**SamplingConfig().model_dump(), "temperature": 0.5}
    assert cfg.read_chunk_rows == 1024 and cfg.overwrite is False


def test_typed_and_boolean_flags() -> None:
    """ints, floats, optional floats, choices and --[no-] booleans are parsed to their types."""
    cfg = config(
        "--gpus-per-engine", "0.5", "--no-enforce-eager", "--overwrite", "--format", "jsonl",
        "--max-tokens", "99", "--id-column", "oid", "--row-group-rows", "7", "--top-p", "0.9",
    )
    assert cfg.engine.gpus_per_engine == 0.5
    assert cfg.engine.enforce_eager is False
    assert cfg.overwrite is True
    assert cfg.format == "jsonl"
    assert cfg.sampling.max_tokens == 99 and cfg.sampling.top_p == 0.9
    assert cfg.id_column == "oid" and cfg.row_group_rows == 7


def test_bad_flag_values_rejected_by_argparse() -> None:
    """A value of the wrong type or outside the choices is refused by the parser (main()
    turns it into one line and exit 2: tests/test_cli_errors.py)."""
    with pytest.raises(UsageError, match="invalid int value: 'eight'"):
        build_parser().parse_args([*BASE, "--batch-size", "eight"])
    with pytest.raises(UsageError, match="invalid choice: 'csv'"):
        build_parser().parse_args([*BASE, "--format", "csv"])


def test_spec_loaded_and_flags_override(tmp_path: Path) -> None:
    """A YAML spec is the base; flags win, nested keys merge rather than replace."""
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "input: /data/in\noutput: /data/out\nmodel: spec-model\ntext_column: body\n"
        "engine:\n  batch_size: 4\n  num_engines: 3\nsampling:\n  max_tokens: 100\n",
        encoding="utf-8",
    )
    args = build_parser().parse_args(["run", "--spec", str(spec), "--batch-size", "8", "--model", "flag-model"])
    cfg = config_from_args(args)
    assert cfg.model == "flag-model"
    assert cfg.engine.batch_size == 8 and cfg.engine.num_engines == 3
    assert cfg.sampling.max_tokens == 100
    assert cfg.text_column == "body"
    assert cfg.input == "/data/in"


@pytest.mark.parametrize(
    "yaml_text",
    [
        "input: /data/in\noutput: /data/out\nmodel: m\nbatch_size: 4\n",
        "input: /data/in\noutput: /data/out\nmodel: m\nengine:\n  batchsize: 4\n",
    ],
    ids=["top-level", "nested"],
)
def test_spec_unknown_key_rejected(tmp_path: Path, yaml_text: str) -> None:
    """Unknown keys in a spec are errors (a typo must not silently fall back to a default)."""
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        config_from_args(build_parser().parse_args(["run", "--spec", str(spec)]))


@pytest.mark.parametrize(
    ("inp", "out"),
    [
        ("/data/in", "/data/in"),
        ("/data/in", "/data/in/out"),
        ("/data/in/", "/data/in/out/"),
        ("/data/in/*.jsonl", "/data/in/enriched"),
        ("/data/in", "/data"),
        ("s3://bucket/in", "s3://bucket/in/out"),
    ],
)
def test_output_overlapping_input_rejected(inp: str, out: str) -> None:
    """An output inside (or containing, or equal to) the input is refused."""
    with pytest.raises(ValidationError, match="overlaps input"):
        JobConfig.model_validate({"input": inp, "output": out, "model": "m"})


@pytest.mark.parametrize(("inp", "out"), [("/data/in", "/data/in2"), ("/data/in/a.jsonl", "/data/in/out"), ("s3://b/in", "s3://b/out")])
def test_output_beside_input_accepted(inp: str, out: str) -> None:
    """Siblings (including a prefix that is not a folder boundary) are fine."""
    assert JobConfig.model_validate({"input": inp, "output": out, "model": "m"}).output == out


# ---------------------------------------------------------------- main
def test_tasks_prints_address_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`enrich tasks` lists the address task and its JSON schema."""
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert [line.split(" ")[0] for line in out.split("\n\n") if line][:3] == ["address", "keywords", "classify"]
    header, _, body = out.split("\n\n")[0].partition("\n")
    assert header.startswith("address (v2): Shipping address")
    schema = json.loads(body)
    assert list(schema["properties"]) == ["province", "city", "district", "specific_location", "name", "phone"]
    assert sorted(schema["required"]) == sorted(schema["properties"])
    assert schema["properties"]["phone"]["pattern"] == "^[0-9+-]{0,20}$"
    assert schema["properties"]["province"]["minLength"] == 1
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--batch-size", "0"], "--batch-size (engine.batch_size): Input should be greater than or equal to 1"),
        (["--output", "/data/in/out"], "output '/data/in/out' overlaps input '/data/in'"),
        (["--temperature", "-1"], "--temperature (sampling.temperature): Input should be greater than"),
    ],
)
def test_invalid_config_exit_code_2(capsys: pytest.CaptureFixture[str], flags: list[str], expected: str) -> None:
    """An invalid configuration exits 2 with the reason on stderr, before any work starts."""
    assert main([*BASE, *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("enrich: error: invalid configuration: ") and expected in captured.err
    assert captured.err.count("\n") == 1, captured.err  # one line


def test_missing_required_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --model (and no spec) the run is refused with exit code 2."""
    assert main(["run", "--input", "/data/in", "--output", "/data/out"]) == 2
    err = capsys.readouterr().err
    assert "model" in err and "Field required" in err


def test_unknown_spec_key_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown spec key through main: exit code 2 naming the key."""
    spec = tmp_path / "job.yaml"
    spec.write_text("input: /data/in\noutput: /data/out\nmodel: m\nwokers: 3\n", encoding="utf-8")
    assert main(["run", "--spec", str(spec)]) == 2
    assert "wokers" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["- input: /data/in\n", "input: [unclosed\n", None], ids=["list", "syntax", "missing"])
def test_bad_spec_file_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None) -> None:
    """A spec that cannot be read as a mapping is an invalid configuration too."""
    spec = tmp_path / "job.yaml"
    if content is not None:
        spec.write_text(content, encoding="utf-8")
    assert main(["run", "--spec", str(spec)]) == 2
    assert str(spec) in capsys.readouterr().err


# ---------------------------------------------------------------- several tasks
def test_repeated_task_flag_makes_a_multi_task_run() -> None:
    one = config("--task", "keywords")
    assert one.task == "keywords" and not one.multi_task and list(one.task_configs()) == ["keywords"]
    assert one.task_configs()["keywords"] is one  # a single task writes to OUTPUT itself
    cfg = config("--task", "address", "--task", "keywords", "--max-keywords", "3")
    assert cfg.multi_task and cfg.task == ["address", "keywords"]
    subs = cfg.task_configs()
    assert list(subs) == ["address", "keywords"]
    assert [s.task for s in subs.values()] == ["address", "keywords"]
    assert [s.output for s in subs.values()] == [cfg.output.rstrip("/") + "/address", cfg.output.rstrip("/") + "/keywords"]
    assert all(not s.multi_task for s in subs.values())
    assert subs["keywords"].task_options.max_keywords == 3


def test_multi_task_spec_gives_each_task_its_adapter_and_options(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "input: /data/in\noutput: /data/out\nmodel: m\n"
        "tasks:\n"
        "  - task: address\n"
        "  - task: classify\n    adapter: s3://models/lora\n    task_options: {labels: [a, b]}\n"
        "  - task: classify\n    name: classify_plain\n",
        encoding="utf-8",
    )
    subs = config_from_args(build_parser().parse_args(["run", "--spec", str(spec)])).task_configs()
    assert list(subs) == ["address", "classify", "classify_plain"]
    assert subs["classify"].adapter == "s3://models/lora" and subs["classify"].task_options.labels == ["a", "b"]
    assert subs["classify_plain"].adapter is None and subs["classify_plain"].task_options.labels is None
    assert subs["classify_plain"].output == "/data/out/classify_plain"


@pytest.mark.parametrize(("extra", "message"), [
    ({"task": "address"}, "not both"),
    ({"adapter": "lora"}, "give each task its adapter"),
    ({"tasks": [{"task": "address"}, {"task": "address"}]}, "unique"),
    ({"tasks": [{"task": "address", "name": "a/b"}, {"task": "keywords"}]}, "pattern"),
])
def test_multi_task_config_errors(extra: dict[str, Any], message: str) -> None:
    data = {"input": "/in", "output": "/out", "model": "m",
            "tasks": [{"task": "address"}, {"task": "keywords"}], **extra}
    with pytest.raises(ValidationError, match=message):
        JobConfig.model_validate(data)
