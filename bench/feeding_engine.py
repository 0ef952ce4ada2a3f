"""The stand-in engine of the feeding simulation (bench/feeding.py): its step-time models and
where their numbers come from, the rows it is fed, the ideal (always full) time, and the engine
itself in virtual time.

Step time = `fixed_s` + `per_seq_s` × sequences in the step + `prefill_tok_s` × prefill tokens.
FIFO waiting queue; at every step the engine admits waiting requests while fewer than
`max_num_seqs` run; prefill is chunked within `max_num_batched_tokens` per step (decode tokens
count against it); each decoding sequence emits one token per step.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

@dataclass(frozen=True)
class StepModel:
    """Step time of the stand-in engine; see PROFILES for where the numbers come from."""

    name: str
    fixed_s: float  # per step, whatever the batch: weights read once, launches, scheduler
    per_seq_s: float  # per sequence in the step: its KV-cache read, grammar mask, sampling
    prefill_tok_s: float  # per prompt token prefilled (compute-bound)
    source: str


# Qwen3-0.6B (0.6 B params, bf16 = 1.2 GB; 28 layers × 8 KV heads × 128 dims × K,V × 2 B =
# 112 KiB of KV cache per token) on an NVIDIA L4 (300 GB/s, 121 dense bf16 TFLOPS).
GPU_L4 = StepModel(
    "gpu-l4-qwen3-0.6b",
    fixed_s=6e-3,
    per_seq_s=8e-5,
    prefill_tok_s=2.5e-5,
    source="derived, not measured: weights 1.2 GB / 300 GB/s = 4 ms + ~2 ms launch, sampler and "
    "scheduler per step (published vLLM decode latencies for sub-1B models on L4/A10 are a few ms "
    "per step at small batch); per sequence ~175 context tokens × 112 KiB = 20 MB / 300 GB/s = "
    "67 µs + ~13 µs grammar mask and sampling; prefill 2 × 0.6 GFLOP per token at ~48 TFLOPS "
    "(40% of 121) = 25 µs",
)
# This repository's measured CPU engine: ~270-300 output tok/s at 64 running sequences
# (RESULTS.md profile), with the per-sequence grammar mask dominating (py-spy: 61% in
# xgrammar's fill_next_token_bitmask): 2 ms + 64 × 3.5 ms = 226 ms per step -> 283 tok/s.
CPU_DEV = StepModel(
    "cpu-dev-box",
    fixed_s=2e-3,
    per_seq_s=3.5e-3,
    prefill_tok_s=2e-4,
    source="fitted to this repository's CPU measurements (RESULTS.md profile: ~280 tok/s at 64 sequences, "
    "cost per sequence, not per step)",
)
PROFILES = {p.name: p for p in (GPU_L4, CPU_DEV)}


@dataclass(frozen=True)
class Row:
    prompt_len: int
    out_lens: tuple[int, ...]  # output tokens of each attempt
    attempts: int  # attempts the row takes (the retry ladder stops at the first valid output)


def make_rows(n: int, seed: int = 0, p_retry: float = 0.05, max_attempts: int = 2, max_tokens: int = 256) -> list[Row]:
    """Address-like rows: prompts ~125 tokens; outputs log-normal around 90 tokens (the CPU runs
    averaged ~100), cut at max_tokens; `p_retry` of the attempts fail validation and are retried."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        lens = tuple(min(max_tokens, max(16, round(rng.lognormvariate(math.log(90), 0.4)))) for _ in range(max_attempts))
        attempts = 1
        while attempts < max_attempts and rng.random() < p_retry:
            attempts += 1
        rows.append(Row(max(40, round(rng.gauss(125, 15))), lens, attempts))
    return rows


def ideal_time(rows: list[Row], step: StepModel, max_num_seqs: int) -> float:
    """The same work with the running set always full: every step decodes max_num_seqs
    sequences; prefill tokens ride along in those steps and cost only their own time."""
    out_tokens = sum(sum(r.out_lens[: r.attempts]) for r in rows)
    prompt_tokens = sum(r.prompt_len * r.attempts for r in rows)
    steps = out_tokens / max_num_seqs
    return steps * (step.fixed_s + step.per_seq_s * max_num_seqs) + prompt_tokens * step.prefill_tok_s


class Engine:
    """The stand-in engine and the simulation's clock (virtual seconds)."""

    def __init__(self, step: StepModel, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.step_model, self.max_num_seqs, self.budget = step, max_num_seqs, max_num_batched_tokens
        self.now = 0.0
        self.steps = 0
        self.waiting: deque[list[Any]] = deque()  # [prompt_left, out_len, callback]
        self.prefilling: list[list[Any]] = []
        self.decoding: list[tuple[int, int, Callable[[], None]]] = []  # (last step, seq no, callback)
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.busy_s = self.idle_s = self.occupancy_integral = 0.0

    def submit(self, prompt_len: int, out_len: int, done: Callable[[], None]) -> None:
        self.waiting.append([prompt_len, out_len, done])

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (self.now + delay, self._seq, fn))

    def running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    def run(self) -> None:
        while True:
            while self.timers and self.timers[0][0] <= self.now:
                heapq.heappop(self.timers)[2]()
            if self.waiting or self.running():
                self._step()
            elif self.timers:
                self.idle_s += self.timers[0][0] - self.now
                self.now = self.timers[0][0]
            else:
                return

    def _step(self, defer: bool = False) -> list[Callable[[], None]]:
        """One engine step; its finished requests' callbacks run now, or are returned (`defer`)
        for an async engine to run once the step's time has passed."""
        while self.waiting and self.running() < self.max_num_seqs:
            self.prefilling.append(self.waiting.popleft())
        n_seqs = self.running()
        budget = self.budget - len(self.decoding)
        prefill_tokens = 0
        finished_prefill = []
        for req in self.prefilling:  # chunked prefill, first come first served
            take = min(req[0], budget)
            req[0] -= take
            budget -= take
            prefill_tokens += take
            if req[0] == 0:
                finished_prefill.append(req)
            if budget <= 0:
                break
        s = self.step_model
        dt = s.fixed_s + s.per_seq_s * n_seqs + s.prefill_tok_s * prefill_tokens
        self.now += dt
        self.busy_s += dt
        self.occupancy_integral += dt * n_seqs
        k = self.steps
        self.steps += 1
        for req in finished_prefill:  # the step that ends a prefill samples its first token
            self.prefilling.remove(req)
            self._seq += 1
            heapq.heappush(self.decoding, (k + req[1] - 1, self._seq, req[2]))
        done = []
        while self.decoding and self.decoding[0][0] <= k:
            done.append(heapq.heappop(self.decoding)[2])
        if defer:
            return done
        for callback in done:
            callback()
        return []

    def occupancy(self) -> float:
        """Time-weighted mean running sequences / max_num_seqs, over the engine's busy time."""
        return self.occupancy_integral / self.busy_s / self.max_num_seqs if self.busy_s else 0.0
