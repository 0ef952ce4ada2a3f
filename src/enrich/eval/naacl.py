"""Per-field scores of the address task on NAACL-2019 (Neural Chinese Address Parsing) addresses.

NAACL-2019 gold spans are surface text (浙江, 杭州市, 义乌) and often absent (an address may start at
the city), while the task emits official names (浙江省, 金华市, 义乌市) and infers what is left out.
So each of province, city and district is scored only where the gold has that span, and a value
counts as right when its short form equals the span's: names the division table knows go through
its short forms (浙江 == 浙江省). Names are compared as text: the level and the parent are not
checked (two 鼓楼区 in different cities match), and a span the table no longer knows (奉化市, now
奉化区; 江干区, abolished) matches only itself. Whole-row exact match does not apply: the gold has
no phone.

    python -m enrich.eval.naacl --model models/demo-address --output demo-output/naacl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from enrich.eval.gold import shared_data
from enrich.tasks.divisions import DivisionTable, aliases, division_table

# NAACL label -> the address task's field it is scored against.
SCORED = {"prov": "province", "city": "city", "district": "district"}


def parse_naacl(lines: Iterator[str], source: str = "naacl") -> Iterator[tuple[str, dict[str, str]]]:
    """(address text, {field: first gold span}) per blank-line-separated block of `token TAG` lines."""
    text: list[str] = []
    spans: dict[str, str] = {}
    current: str | None = None
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if text:
                yield "".join(text), spans
            text, spans, current = [], {}, None
            continue
        token, _, tag = line.rpartition(" ")
        if not token or not (tag == "O" or tag[:2] in ("B-", "I-")):
            raise ValueError(f"{source}:{number}:1: expected 'TOKEN B-label|I-label|O', got {line!r}")
        text.append(token)
        label = tag[2:] if tag != "O" else ""
        field = SCORED.get(label)
        if tag.startswith("B-") and field and field not in spans:
            spans[field], current = token, field
        elif tag.startswith("I-") and field and current == field:
            spans[field] += token
        else:  # any other tag ends the span being read
            current = None
    if text:
        yield "".join(text), spans


def load_naacl(path: str | Path, limit: int | None = None) -> list[tuple[str, dict[str, str]]]:
    with Path(path).open(encoding="utf-8") as fh:
        rows = list(parse_naacl(fh, str(path)))
    return rows[:limit] if limit is not None else rows


def short_names(table: DivisionTable) -> dict[str, str]:
    """Every division's full name and aliases -> its short form (杭州市 -> 杭州, 大理州 -> 大理)."""
    out: dict[str, str] = {}
    for d in table.by_code.values():
        for name in (d.name, *aliases(d)):
            out.setdefault(name, d.short or d.name)
    return out


def same_division(pred: Any, gold: str, shorts: Mapping[str, str]) -> bool:
    """pred and gold are one name up to the official suffix (浙江 == 浙江省); the table's names only."""
    if not isinstance(pred, str) or not pred.strip():
        return False
    p, g = pred.strip(), gold.strip()
    return shorts.get(p, p) == shorts.get(g, g)


def naacl_scores(preds: Sequence[Mapping[str, Any] | None], golds: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """{field: {"accuracy", "support"}} over the rows whose gold has the field; a reject is wrong."""
    if len(preds) != len(golds) or not golds:
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold rows")
    shorts = short_names(division_table())
    out: dict[str, Any] = {}
    for field in SCORED.values():
        scored = [(p, g[field]) for p, g in zip(preds, golds) if field in g]
        right = sum(p is not None and same_division(p.get(field), g, shorts) for p, g in scored)
        out[field] = {"accuracy": right / len(scored) if scored else None, "support": len(scored)}
    return out


def evaluate_naacl(data: str, model: str, output: str, limit: int | None, engine: Mapping[str, Any]) -> dict[str, Any]:
    """The model through the real pipeline and the rules baseline on the same addresses, scored as above."""
    from enrich.config import JobConfig
    from enrich.eval.baselines import rule_based_address
    from enrich.output import read_output
    from enrich.pipeline import run

    rows = load_naacl(data, limit)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    shard = out / "_input" / "naacl.jsonl"
    shard.parent.mkdir(exist_ok=True)
    shard.write_text("".join(json.dumps({"row": str(i), "text": t}, ensure_ascii=False) + "\n"
                             for i, (t, _) in enumerate(rows)), encoding="utf-8")
    cfg = JobConfig.model_validate({"input": str(shard), "output": str(out / "run"), "model": model, "task": "address",
                                    "id_column": "row", "overwrite": True, "engine": dict(engine)})
    summary = run(cfg)
    enriched = read_output(str(out / "run")).to_table(columns=["row", *SCORED.values()])  # the committed rows
    by_id = {r["row"]: r for r in enriched.to_pylist()}
    preds = [by_id.get(str(i)) for i in range(len(rows))]  # None: rejected
    golds = [g for _, g in rows]
    result = {
        "data": data, "model": model, "n": len(rows), "rows_ok": summary.output_rows_ok,
        "rows_rejected": summary.output_rows_rejected,
        "model_scores": naacl_scores(preds, golds),
        "rules": naacl_scores([rule_based_address(t) for t, _ in rows], golds),
    }
    (out / "naacl.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(shared_data() / "address" / "naacl2019" / "test.txt"),
                        help="NAACL-2019 split (one `token TAG` a line)")
    parser.add_argument("--model", required=True, help="model folder, hub id or s3:// prefix")
    parser.add_argument("--output", required=True, help="local folder for the run and naacl.json")
    parser.add_argument("--limit", type=int, default=None, help="only the first N addresses")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None, help="engine's memory share")
    args = parser.parse_args(argv)
    engine = {"max_model_len": 1024, "gpu_memory_utilization": args.gpu_memory_utilization}
    result = evaluate_naacl(args.data, args.model, args.output, args.limit, engine)
    for name in ("model_scores", "rules"):
        cells = ", ".join(f"{f} {s['accuracy']:.3f} (n={s['support']})" if s["support"] else f"{f} - (n=0)"
                          for f, s in result[name].items())
        print(f"{name}: {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
