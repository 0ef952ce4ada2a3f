"""What the harness's modules share: the repository root and the systems compared."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("ceiling", "peer", "enrich", "enrich-all-cores")
MACHINE = "enrich-all-cores"  # enrich with one engine per core (CPU) or per GPU: the per-machine figure
# How each system's engine start is measured: in every run record and in the report.
ENGINE_START_METHOD = {
    "ceiling": "duration of LLM(...) (imports and prompt preparation excluded)",
    "peer": "launch → vLLM's 'init engine ... took' log line (Ray start, actor scheduling, engine load)",
    "enrich": "launch → vLLM's 'init engine ... took' log line (Ray start, actor scheduling, engine load)",
    MACHINE: "launch → the first engine's 'init engine ... took' log line (engines start side by side)",
}
