"""`enrich train` on the command line: flags generated from TrainConfig (like `enrich run`'s)."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from enrich.train_config import TrainConfig


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from enrich.cli import _add_model_options  # the same flag generator as `enrich run`

    train = sub.add_parser(
        "train", help="fine-tune a model on labelled rows (LoRA adapter or --full model)",
        description=TrainConfig.__doc__,
    )
    train.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    _add_model_options(train.add_argument_group("training"), TrainConfig, "")
    train.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "log_level", "run")}
    try:
        cfg = TrainConfig.model_validate(given)
    except ValidationError as exc:
        print(f"enrich train: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    from enrich.train_run import run_training  # imports Ray, torch: only when it runs

    history = run_training(cfg)
    losses = [e["loss"] for e in history["log_history"] if "loss" in e]
    logging.getLogger("enrich.train").info(
        "done: %d steps, loss %.4f -> %.4f; model in %s (report: train_report.md)",
        history["global_step"], losses[0], losses[-1], cfg.output,
    )
    return 0
