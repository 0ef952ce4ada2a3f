"""When and in which order runs start: a seeded random order per repeat, and a gate on the
machine's 1-minute load average before every run (a run's own engines keep the load high for
a minute or two after it ends, so every run waits for the machine to settle)."""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MAX_LOAD = 0.3  # 1-minute load average above which no run starts (issue 14)
LOAD_WAIT_S = 1800.0  # how long a run waits for it, at most
LOAD_POLL_S = 5.0


def run_order(items: Sequence[Any], repeats: int, seed: int) -> list[list[Any]]:
    """Each repeat's order: `items` shuffled by a generator seeded once, so an order is
    reproducible from the seed and drift of the machine hits every system alike."""
    rng = random.Random(seed)
    orders = []
    for _ in range(repeats):
        order = list(items)
        rng.shuffle(order)
        orders.append(order)
    return orders


def loadavg_1m() -> float:
    return os.getloadavg()[0]


@dataclass
class LoadGate:
    """Waits until the 1-minute load average is at most `max_load`, for up to `wait_s`."""

    max_load: float = MAX_LOAD
    wait_s: float = LOAD_WAIT_S
    poll_s: float = LOAD_POLL_S
    read: Callable[[], float] = loadavg_1m
    sleep: Callable[[float], None] = time.sleep

    def wait(self) -> dict[str, Any]:
        """{"loadavg_1m_before", "load_waited_s", "load_ok"}: the load when the run starts, how
        long it waited for it, and whether it was at most max_load then."""
        waited = 0.0
        load = self.read()
        while load > self.max_load and waited < self.wait_s:
            step = min(self.poll_s, self.wait_s - waited)
            self.sleep(step)
            waited += step
            load = self.read()
        return {"loadavg_1m_before": load, "load_waited_s": waited, "load_ok": load <= self.max_load}


def check_start(gate: LoadGate, wait: bool) -> str | None:
    """Refuse to start a benchmark on a busy machine (or wait for it with `wait`): the reason
    it refuses, or None."""
    if wait:
        state = gate.wait()
    else:
        load = gate.read()
        state = {"loadavg_1m_before": load, "load_ok": load <= gate.max_load}
    if state["load_ok"]:
        return None
    return (
        f"1-minute load average {state['loadavg_1m_before']:.2f} > {gate.max_load}: the machine is busy, "
        "and a benchmark run now would measure the other work. Wait (--wait-for-load) or raise --max-load "
        "(runs above 0.3 make every target inconclusive)."
    )


def add_probe_args(parser: argparse.ArgumentParser, repeats: int, out: str) -> None:
    """The options of a small probe (bench/startup.py, bench/tokenizer_load.py)."""
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=out)


def probe_runs(
    variants: Sequence[str], args: argparse.Namespace, gate: LoadGate | None = None
) -> Iterator[tuple[str, float]]:
    """Each variant `args.repeats` times, in one order shuffled by `args.seed`; every run
    after waiting (15 min at most) for a 1-minute load at most `args.max_load`:
    (variant, the load when it starts)."""
    order = [name for name in variants for _ in range(args.repeats)]
    random.Random(args.seed).shuffle(order)
    gate = gate or LoadGate(max_load=args.max_load, wait_s=900.0)
    for name in order:
        yield name, gate.wait()["loadavg_1m_before"]
