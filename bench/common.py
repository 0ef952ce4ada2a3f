"""What the harness's modules share: the repository root and the systems compared."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Per engine, then per machine (one engine per core on CPU, per GPU on GPU machines).
SYSTEMS = ("ceiling", "ceiling-all-cores", "peer", "peer-all-cores", "enrich", "enrich-all-cores")
ALL_CORES = {"ceiling": "ceiling-all-cores", "peer": "peer-all-cores", "enrich": "enrich-all-cores"}
MACHINE = "enrich-all-cores"  # enrich's per-machine figure
_LINE = "vLLM's 'init engine ... took' log line"
# How each system's engine start is measured: in every run record and in the report. The targets
# compare `launch_to_engine_ready_s`, the same signal (that line) for every system.
ENGINE_START_METHOD = {
    "ceiling": "duration of LLM(...) (imports and prompt preparation excluded)",
    "ceiling-all-cores": "the slowest engine's LLM(...) (one process per core, started side by side)",
    "peer": f"launch → {_LINE} (Ray start, actor scheduling, engine load)",
    "peer-all-cores": f"launch → the first engine's {_LINE} (engines start side by side)",
    "enrich": f"launch → {_LINE} (Ray start, actor scheduling, engine load)",
    "enrich-all-cores": f"launch → the first engine's {_LINE} (engines start side by side)",
}


def is_all_cores(system: str) -> bool:
    return system.endswith("-all-cores")
