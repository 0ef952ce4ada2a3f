"""Command line: `enrich run` and `enrich tasks`. Options are generated from JobConfig.

Nested settings (engine, sampling) are flattened: `--batch-size` sets `engine.batch_size`.
A YAML job spec (`--spec job.yaml`) is validated by the same model; flags win over it.

Expected failures end in one line on stderr, `enrich: error: <message>`, and an exit status:
2 for a configuration or input error found before any work, 1 for a run that failed (the
table: `enrich.errors.usage_errors`). The traceback is printed only with `--log-level DEBUG`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from enrich.config import JobConfig
from enrich.errors import ConfigError, ModelNotFoundError, UsageError, one_line, raised_in_ray, report_error
from enrich.logs import LEVELS, setup_logging

_NESTED = ("task_options", "engine", "sampling")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag raises instead of printing usage and exiting, so main()
    reports it in the same one-line form (the usage is one `--help` away)."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_model_options(group: argparse._ArgumentGroup, model: type[BaseModel], prefix: str) -> None:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if name in _NESTED or _is_model_list(annotation):
            continue  # nested models get their own groups; lists of models live in the spec
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
        elif list[str] in args:
            kwargs["action"] = "append"  # repeatable: --task address --task keywords
        elif typing.get_origin(annotation) is Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
            kwargs.pop("metavar", None)
        elif base in (int, float):
            kwargs["type"] = base
        group.add_argument(_flag(name), **kwargs)


def _is_model_list(annotation: Any) -> bool:
    inner = typing.get_args(annotation)
    return typing.get_origin(annotation) is list and bool(inner) and isinstance(inner[0], type) and issubclass(
        inner[0], BaseModel
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="enrich", description="Typed, validated tables from raw text with small fine-tuned LLMs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a task over input shards", description=JobConfig.__doc__)
    run.add_argument("--spec", help="YAML job spec (same keys as these options; flags win)")
    _add_log_level(run)
    _add_model_options(run.add_argument_group("job"), JobConfig, "")
    for nested in _NESTED:
        model = JobConfig.model_fields[nested].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        _add_model_options(run.add_argument_group(nested, model.__doc__), model, f"{nested}.")
    sub.add_parser("tasks", help="list the available tasks and their output schemas")
    _add_eval_parser(sub)
    _add_train_parser(sub)
    return parser


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from enrich.train_cli import add_train_parser  # `enrich train` lives in train_*.py

    add_train_parser(sub)


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="score a model on a gold set, next to baselines (report.md, eval.json, plots)",
        description="Run the real pipeline over a gold set's texts and score the outputs. Writes "
        "OUTPUT/report.md, OUTPUT/eval.json and PNG plots; the pipeline output goes to OUTPUT/run/.",
    )
    ev.add_argument("--task", required=True, help="address, keywords, classify (or any task with --gold-columns)")
    ev.add_argument("--data", required=True, help="gold set: address .jsonl (chat), keywords CSL .tsv or "
                    "FewCLUE .json, classify MMLU-Pro .jsonl; or a JSONL/Parquet table with --gold-columns")
    ev.add_argument("--model", required=True, help="hub id, local folder, or s3:// prefix")
    ev.add_argument("--output", required=True, help="folder or s3:// prefix for the eval outputs")
    ev.add_argument("--limit", type=int, help="score only the first N gold examples")
    ev.add_argument("--sample", type=int, help="score N gold examples drawn at random (MMLU-Pro is sorted by "
                    "category: its first N are one class)")
    ev.add_argument("--sample-seed", type=int, default=0, help="seed of --sample (default: 0)")
    ev.add_argument("--k", type=int, default=5, help="keywords: top k scored, for the model and baselines (default: 5)")
    ev.add_argument("--adapter", help="LoRA adapter: hub id, local folder or s3:// prefix")
    ev.add_argument("--labels", help="classify: comma-separated labels (default: the 14 MMLU-Pro categories)")
    ev.add_argument("--gold-columns", help="comma-separated gold columns of a generic table (per-field accuracy)")
    ev.add_argument("--text-column", default="text", help="with --gold-columns: the input text column (default: text)")
    ev.add_argument("--model-revision", help="hub revision")
    ev.add_argument("--s3-endpoint", help="endpoint URL of an S3-compatible store")
    ev.add_argument("--ray-address", help="Ray cluster address; default RAY_ADDRESS, else embedded Ray")
    _add_log_level(ev)
    for nested in ("engine", "sampling"):
        model = JobConfig.model_fields[nested].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        _add_model_options(ev.add_argument_group(nested, model.__doc__), model, f"{nested}.")


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LEVELS,
        help="INFO: the job's own lines; DEBUG adds Ray's, Ray Data's and vLLM's, and the "
        "traceback of an error (default: INFO)",
    )


def _split(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def _eval(args: argparse.Namespace) -> int:
    from enrich.eval.runner import headline, run_eval  # imports Ray only when it runs

    nested: dict[str, dict[str, Any]] = {"engine": {}, "sampling": {}}
    for dest, value in vars(args).items():
        head, _, tail = dest.partition(".")
        if tail and value is not None:
            nested[head][tail] = value
    job = {"model_revision": args.model_revision, "s3_endpoint": args.s3_endpoint, "ray_address": args.ray_address}
    try:
        result = run_eval(
            args.task, args.data, args.model, args.output, limit=args.limit, sample=args.sample, sample_seed=args.sample_seed, k=args.k, adapter=args.adapter,
            labels=_split(args.labels), gold_columns=_split(args.gold_columns), text_column=args.text_column,
            engine=nested["engine"], sampling=nested["sampling"], job={k: v for k, v in job.items() if v},
        )
    except (ValueError, FileNotFoundError) as exc:
        if raised_in_ray(exc):
            raise  # the run itself failed
        raise ConfigError(one_line(exc)) from exc  # eval checks its gold set and options first
    print(headline(result))
    print(f"  report: {args.output.rstrip('/')}/report.md")
    return 0


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


def check_models(cfg: JobConfig) -> None:
    """Model and adapters exist, before any work. Local folders and s3:// prefixes are checked;
    a hub id (org/name, not a local folder) is left to the hub download, which names it."""
    from enrich.model_store import is_remote
    from enrich.storage import filesystem

    named = [("model", cfg.model)] + [("adapter", s.adapter) for s in cfg.task_specs() if s.adapter]
    for what, where in named:
        assert where is not None
        if is_remote(where):
            fs, path = filesystem(where, cfg.s3_endpoint)
            if not fs.exists(path):
                raise ModelNotFoundError(f"{what} {where}: no such s3 prefix (nothing stored under it)")
            continue
        path = where.removeprefix("file://")
        if _looks_local(path) and not os.path.isdir(os.path.expanduser(path)):
            raise ModelNotFoundError(f"{what} {where}: no such folder")


def _looks_local(path: str) -> bool:
    """A path, not a hub id: absolute, relative with ./ or ~, or an existing file system entry.
    A hub id is `name` or `org/name` and has no such prefix."""
    return path.startswith(("/", "./", "../", "~", ".")) or path.count("/") > 1 or os.path.exists(path)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return report_error(exc, debug=False)
    if args.command == "tasks":
        _print_tasks()
        return 0
    debug = args.log_level == "DEBUG"
    try:
        return _run(args)
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line and a status
        return report_error(exc, debug)
    except KeyboardInterrupt:
        print("enrich: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "eval":
        setup_logging(args.log_level)
        return _eval(args)
    if args.command == "train":
        return args.run(args)
    try:
        cfg = config_from_args(args)
    except (ValueError, OSError, yaml.YAMLError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"invalid configuration: {one_line(exc)}") from exc
    check_models(cfg)
    setup_logging(args.log_level)  # imports Ray Data: after the checks that need none
    from enrich.pipeline import run_tasks  # imports Ray; keep `--help` and `tasks` fast

    for summary in run_tasks(cfg):
        print(summary.human())
    return 0


if __name__ == "__main__":
    sys.exit(main())
