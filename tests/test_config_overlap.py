"""The output must not overlap the input (issue 12 item 3): compared as normalized paths
and schemes, not string prefixes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from enrich.config import JobConfig


def validate(inp: str, out: str) -> JobConfig:
    return JobConfig.model_validate({"input": inp, "output": out, "model": "m"})


@pytest.mark.parametrize(
    ("inp", "out"),
    [
        ("in", "./in/out"),  # relative spellings of one folder
        ("in", "in/out"),
        ("./in/", "in"),
        ("/data/in", "/data/./in/out"),
        ("/data/in", "/data/x/../in/out"),
        ("/data//in/", "/data/in//out/"),
        ("/data/in", "file:///data/in/out"),
        ("s3://b/in", "s3a://b/in/out"),  # s3, s3a and s3n name one store
        ("s3n://b/in/", "s3://b/in"),
        ("s3://b/in/*.jsonl", "s3a://b/in/enriched"),
        ("s3://b/in/day=*/part-*.jsonl", "s3://b/in/out"),  # the glob's fixed prefix is b/in
        ("/data/in/part-[0-9].jsonl", "/data/in/out"),
        ("/data/in/**/*.parquet", "/data"),  # output containing the input
    ],
)
def test_overlap_refused(inp: str, out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="overlaps input"):
        validate(inp, out)


def test_relative_input_absolute_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="overlaps input"):
        validate("in", str(tmp_path / "in" / "out"))


@pytest.mark.parametrize(
    ("inp", "out"),
    [
        ("/data/in", "/data/in2"),
        ("/data/in/a.jsonl", "/data/in/out"),
        ("s3://b/in", "s3://b/out"),
        ("s3://b/in", "s3://other/in/out"),  # another bucket
        ("s3://b/in", "/b/in/out"),  # a local folder is not the bucket
        ("in", "../in/out"),  # the parent's `in`, not ours
        ("/data/in/*.jsonl", "/data/in2/out"),
    ],
)
def test_beside_accepted(inp: str, out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert validate(inp, out).output == out


def test_symlinked_output_inside_input(tmp_path: Path) -> None:
    """A local output reached through a symlink into the input is inside it."""
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "in", tmp_path / "alias")
    with pytest.raises(ValidationError, match="overlaps input"):
        validate(str(tmp_path / "in"), str(tmp_path / "alias" / "out"))
