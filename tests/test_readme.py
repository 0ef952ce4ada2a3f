"""The README names the two commands; docs/options.md is exactly what `enrich run --help` knows."""

from __future__ import annotations

import re

from enrich.options_doc import render, run_parser
from tests.helpers import REPO


def test_options_reference_is_generated_from_the_parser() -> None:
    written = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    assert written == render(run_parser()), "docs/options.md is stale: python -m enrich.options_doc > docs/options.md"


def test_options_reference_lists_every_run_flag() -> None:
    written = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    flags = {opt for action in run_parser()._actions for opt in action.option_strings if opt.startswith("--")}
    missing = sorted(f for f in flags - {"--help"} if f"`{f}`" not in written)
    assert missing == []


def test_readme_names_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)


def test_readme_links_point_at_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?:docs|bench|jobs|samples)/[^)#]+)", readme)
    assert links, "the README links to no docs"
    assert [link for link in links if not (REPO / link).exists()] == []
