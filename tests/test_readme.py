"""The README documents every option of `enrich run` and the two commands."""

from __future__ import annotations

import re

from enrich.cli import build_parser
from tests.helpers import REPO


def test_readme_lists_every_run_option() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    flags = {opt for action in run._actions for opt in action.option_strings if opt.startswith("--")}
    flags -= {"--help"}
    missing = sorted(f for f in flags if not f.startswith("--no-") and f"`{f}`" not in readme)
    assert missing == []


def test_readme_names_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
