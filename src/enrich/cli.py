"""Command line: `enrich run` and `enrich tasks`. Options are generated from JobConfig.

Nested settings (engine, sampling) are flattened: `--batch-size` sets `engine.batch_size`.
A YAML job spec (`--spec job.yaml`) is validated by the same model; flags win over it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from enrich.config import JobConfig

_NESTED = ("task_options", "engine", "sampling")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_model_options(group: argparse._ArgumentGroup, model: type[BaseModel], prefix: str) -> None:
    for name, field in model.model_fields.items():
        if name in _NESTED:
            continue
        annotation = field.annotation
        dest = f"{prefix}{name}"
        default = field.default if field.default is not None else None
        help_text = f"{field.description or ''}"
        if not field.is_required() and default not in (None, ...):
            help_text += f" (default: {default})"
        elif field.is_required():
            help_text += " (required)"
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text}
        if annotation not in (bool, bool | None):
            kwargs["metavar"] = name.upper()
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base = args[0] if typing.get_origin(annotation) is not Literal and len(args) == 1 else annotation
        if annotation in (bool, bool | None):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
            kwargs.pop("metavar", None)
        elif base in (int, float):
            kwargs["type"] = base
        group.add_argument(_flag(name), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enrich", description="Typed, validated tables from raw text with small fine-tuned LLMs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a task over input shards", description=JobConfig.__doc__)
    run.add_argument("--spec", help="YAML job spec (same keys as these options; flags win)")
    run.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    _add_model_options(run.add_argument_group("job"), JobConfig, "")
    for nested in _NESTED:
        model = JobConfig.model_fields[nested].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        _add_model_options(run.add_argument_group(nested, model.__doc__), model, f"{nested}.")
    sub.add_parser("tasks", help="list the available tasks and their output schemas")
    return parser


def config_from_args(args: argparse.Namespace) -> JobConfig:
    given: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if value is None or dest in ("command", "spec", "log_level"):
            continue
        head, _, tail = dest.partition(".")
        if tail:
            given.setdefault(head, {})[tail] = value
        else:
            given[dest] = value
    if args.spec:
        return JobConfig.from_yaml(args.spec, **given)
    return JobConfig.model_validate(given)


def _print_tasks() -> None:
    from enrich.tasks import TASK_FACTORIES, build_task

    for name in TASK_FACTORIES:
        if name == "custom":
            print("custom: your schema (--output-schema module:Class or .json) and prompt template")
            continue
        task = build_task(name)
        print(f"{task.name} (v{task.version}): {task.description}")
        print(json.dumps(task.json_schema(), ensure_ascii=False, indent=2))
        if task.choices:
            print(f"decodes exactly one of: {', '.join(task.choices)}")
        print()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tasks":
        _print_tasks()
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
    except (ValidationError, ValueError, OSError, yaml.YAMLError) as exc:
        print(f"enrich: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    from enrich.pipeline import run  # imports Ray; keep `--help` and `tasks` fast

    summary = run(cfg)
    print(summary.human())
    return 0


if __name__ == "__main__":
    sys.exit(main())
