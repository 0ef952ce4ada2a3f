"""`enrich eval`: run the real pipeline over a gold set and score it next to the baselines.

    OUTPUT/_eval_input/eval.jsonl  the gold texts as one input shard (id column `eval_id`)
    OUTPUT/run/                    the pipeline's output (enriched rows, _rejects, _summary.json)
    OUTPUT/eval.json               every number; OUTPUT/report.md: tables, plots, first misses
    OUTPUT/*.png                   accuracy / P-R-F1 / confusion matrix, reject reasons
A reject is a None prediction: wrong, never skipped. Gold columns of a generic table are held
back from the input shard (they would clash with the task's output columns).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from enrich.arrow_types import arrow_schema
from enrich.config import JobConfig
from enrich.eval import baselines as B
from enrich.eval import gold as G
from enrich.eval.metrics import address_scores, classification_scores, keyword_scores, prf_at_k
from enrich.plots import grouped_bars_png, heatmap_png
from enrich.report import iter_batches, md_table, pct, put
from enrich.storage import filesystem, join, unstrip
from enrich.tasks import task_for
from enrich.tasks.classify import MMLU_PRO_CATEGORIES
from enrich.write import ShardManifest, arrow_fs

ID = "eval_id"
MAX_MISSES = 50
PREDICTED = {"address": list(G.ADDRESS_FIELDS), "keywords": ["keywords"], "classify": ["category"]}


@dataclass
class GoldSet:
    texts: list[str]
    golds: list[Any]
    rows: list[dict[str, Any]]  # the input shard's rows
    fields: list[str] = field(default_factory=list)  # gold columns of a generic table


def load_gold_set(
    task: str, data: str, limit: int | None = None, gold_columns: Sequence[str] | None = None,
    text_column: str = "text", s3_endpoint: str | None = None, sample: int | None = None, seed: int = 0,
) -> GoldSet:
    """Shared gold sets by task and extension, or any JSONL/Parquet table with gold columns.

    `limit`: the first N examples; `sample`: N examples drawn at random (seeded), for files
    sorted by label such as MMLU-Pro, whose first N are all one class."""
    if limit is not None and sample is not None:
        raise ValueError("give --limit (the first N) or --sample (N at random), not both")
    gs = _load_gold_set(task, data, limit, gold_columns, text_column, s3_endpoint)
    if sample is None or sample >= len(gs.rows):
        return gs
    if sample < 0:
        raise ValueError(f"sample must be >= 0, got {sample}")
    keep = sorted(random.Random(seed).sample(range(len(gs.rows)), sample))  # file order, ids kept
    return GoldSet([gs.texts[i] for i in keep], [gs.golds[i] for i in keep], [gs.rows[i] for i in keep], gs.fields)


def _load_gold_set(
    task: str, data: str, limit: int | None, gold_columns: Sequence[str] | None, text_column: str,
    s3_endpoint: str | None,
) -> GoldSet:
    if gold_columns:
        return _table_gold(data, limit, list(gold_columns), text_column, s3_endpoint)
    if task == "address":
        pairs: list[tuple[str, Any]] = list(G.load_address(data, limit))
    elif task == "keywords":
        pairs = list(G.load_csl_tsv(data, limit) if data.endswith(".tsv") else G.load_fewclue_csl(data, limit))
    elif task == "classify":
        pairs = list(G.load_mmlu_pro(data, limit))
    else:
        raise ValueError(f"no gold loader for task {task!r}: name the gold columns (--gold-columns)")
    rows = [{ID: f"{i:06d}", "text": t} for i, (t, _) in enumerate(pairs)]
    return GoldSet([t for t, _ in pairs], [g for _, g in pairs], rows)


def _table_gold(data: str, limit: int | None, fields: list[str], text_column: str, endpoint: str | None) -> GoldSet:
    fs, path = filesystem(data, endpoint)
    if path.lower().endswith((".parquet", ".pq")):
        table = pq.read_table(path, filesystem=arrow_fs(fs))
        records = table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()
    else:
        with fs.open(path, "rt", encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()][:limit]
    out = GoldSet([], [], [], fields)
    for i, rec in enumerate(records):
        if missing := [c for c in [text_column, *fields] if c not in rec]:
            raise ValueError(f"{data} row {i}: missing columns {missing}")
        if ID in rec:
            raise ValueError(f"{data}: has a column {ID!r}, which eval uses as its row id")
        out.texts.append(str(rec[text_column]))
        out.golds.append({c: rec[c] for c in fields})
        out.rows.append({ID: f"{i:06d}", **{c: v for c, v in rec.items() if c not in fields}})
    return out


def field_scores(
    preds: Sequence[Mapping[str, Any] | None], golds: Sequence[Mapping[str, Any]], fields: Sequence[str]
) -> dict[str, Any]:
    """Exact per-field accuracy (values compared as they are) and whole-row exact match."""
    if not golds:
        raise ValueError("nothing to score: no gold examples")
    right = dict.fromkeys(fields, 0)
    misses = []
    for i, (pred, gold) in enumerate(zip(preds, golds)):
        hits = [pred is not None and f in pred and pred[f] == gold[f] for f in fields]
        for f, hit in zip(fields, hits):
            right[f] += hit
        if not all(hits):
            misses.append(i)
    n = len(golds)
    per_field = {f: right[f] / n for f in fields}
    return {"n": n, "exact_match": (n - len(misses)) / n, "per_field": per_field, "misses": misses}


def run_eval(
    task: str, data: str, model: str, output: str, *, limit: int | None = None, sample: int | None = None,
    sample_seed: int = 0, k: int = 5,
    adapter: str | None = None, labels: Sequence[str] | None = None, gold_columns: Sequence[str] | None = None,
    text_column: str = "text", engine: Mapping[str, Any] | None = None, sampling: Mapping[str, Any] | None = None,
    task_options: Mapping[str, Any] | None = None, job: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate `model` on the gold set `data`; writes OUTPUT/{eval.json,report.md,*.png}, returns eval.json."""
    from enrich.pipeline import run  # noqa: PLC0415 - imports Ray: only when running

    started = time.time()
    job = dict(job or {})
    fs, root = filesystem(output, job.get("s3_endpoint"))
    gs = load_gold_set(task, data, limit, gold_columns, text_column, job.get("s3_endpoint"), sample, sample_seed)
    if not gs.rows:
        raise ValueError(f"{data}: no gold examples (limit {limit}, sample {sample})")
    opts = dict(task_options or {})
    chosen = list(labels or opts.get("labels") or MMLU_PRO_CATEGORIES)
    if labels:
        opts["labels"] = list(labels)
    if task == "classify" and not gs.fields:
        if unknown := sorted(set(gs.golds) - set(chosen)):
            raise ValueError(f"gold labels {unknown} are not among the labels {chosen}")
    if task == "keywords":
        opts.setdefault("max_keywords", k)  # the model emits at most k, like the baselines
    shard = join(root, "_eval_input", "eval.jsonl")
    put(fs, shard, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in gs.rows))
    cfg = JobConfig.model_validate({
        **job, "input": unstrip(fs, shard), "output": unstrip(fs, join(root, "run")), "task": task,
        "model": model, "adapter": adapter, "text_column": text_column if gs.fields else "text",
        "id_column": ID, "overwrite": True, "task_options": opts, "engine": dict(engine or {}),
        "sampling": dict(sampling or {}),
    })
    if "row_group_rows" not in job:
        # Eval sets are small: write (and so commit) every engine batch, so the run's report has a
        # throughput timeline and a crash keeps the batches done (the 50,000-row default would
        # commit once, at the end).
        cfg = cfg.model_copy(update={"row_group_rows": cfg.engine.batch_size})
    written = arrow_schema(task_for(cfg).written_model).names
    if missing := [f for f in gs.fields if f not in written]:
        raise ValueError(f"gold columns {missing} are not output columns of task {task!r}: {written}")
    summary = run(cfg)
    preds, rejects = _read_back(fs, join(root, "run"), gs, gs.fields or PREDICTED.get(task, []))
    result = {"task": task, "data": data, "model": model, "adapter": adapter,
              "selection": {"limit": limit, "sample": sample, "seed": sample_seed if sample is not None else None},
              **evaluate(task, gs, preds, rejects, k=k, labels=chosen),
              "seconds": round(time.time() - started, 3), "run": summary.model_dump()}
    write_eval_report(fs, root, result)
    return result


def evaluate(
    task: str, gs: GoldSet, preds: list[Any], rejects: Mapping[str, Mapping[str, Any]], *, k: int = 5,
    labels: Sequence[str] = MMLU_PRO_CATEGORIES,
) -> dict[str, Any]:
    """Counts, the model's scores, the baselines' on the same rows, and the first misses."""
    if gs.fields:
        scores = {"model": field_scores(preds, gs.golds, gs.fields)}
        if task == "address":
            scores["rules"] = field_scores([B.rule_based_address(t) for t in gs.texts], gs.golds, gs.fields)
    elif task == "address":
        scores = {"model": address_scores(preds, gs.golds),
                  "rules": address_scores([B.rule_based_address(t) for t in gs.texts], gs.golds)}
    elif task == "keywords":
        scores = {"model": keyword_scores(preds, gs.golds, k),
                  "tfidf": keyword_scores([B.tfidf_keywords(t, k) for t in gs.texts], gs.golds, k),
                  "textrank": keyword_scores([B.textrank_keywords(t, k) for t in gs.texts], gs.golds, k)}
    else:
        top = B.majority_class(gs.golds, labels)
        majority = classification_scores([top] * len(gs.golds), gs.golds, labels)
        scores = {"model": classification_scores(preds, gs.golds, labels), "majority_class": {**majority, "label": top}}
    reasons: dict[str, int] = {}
    for r in rejects.values():
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return {
        "n": len(gs.golds), "rows_ok": sum(p is not None for p in preds), "rows_rejected": len(rejects),
        "rejects_by_reason": dict(sorted(reasons.items())), "k": k if task == "keywords" and not gs.fields else None,
        "labels": list(labels) if task == "classify" and not gs.fields else None, "gold_columns": gs.fields or None,
        "model_scores": scores.pop("model"), "baselines": scores, "misses": _misses(task, gs, preds, rejects, k),
    }


def headline(r: Mapping[str, Any]) -> str:
    """The main score of the model and of each baseline, a line each (the CLI prints it)."""
    def main(s: Mapping[str, Any]) -> str:
        if "exact_match" in s:
            return f"exact match {s['exact_match']:.3f}"
        if "accuracy" in s:
            return f"accuracy {s['accuracy']:.3f}"
        return f"F1@{r['k']} {s['exact']['micro']['f1']:.3f} (micro, exact)"

    lines = [f"enrich eval: {r['task']} on {r['data']}: n={r['n']}, {r['rows_rejected']} rejected"]
    systems = {"model": r["model_scores"], **r["baselines"]}
    return "\n".join(lines + [f"  {name:<15} {main(s)}" for name, s in systems.items()])


def _read_back(fs: Any, run_root: str, gs: GoldSet, columns: list[str]) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Predictions in gold order (None = rejected) and the rejects by eval_id."""
    paths = fs.glob(join(run_root, "_manifests", "*.json"))
    manifests = [ShardManifest.model_validate_json(fs.cat_file(p)) for p in paths]
    ok: dict[str, dict[str, Any]] = {}
    for batch in iter_batches(fs, run_root, [f for m in manifests for f in m.files], ["enrich_row_id", *columns]):
        ok.update((r["enrich_row_id"], r) for r in batch.to_pylist())
    rejects: dict[str, dict[str, Any]] = {}
    cols = ["row_id", "reason", "message", "raw_output", "attempts"]
    for batch in iter_batches(fs, run_root, [f for m in manifests for f in m.reject_files], cols):
        rejects.update((r["row_id"], r) for r in batch.to_pylist())
    ids = [r[ID] for r in gs.rows]
    lost = [i for i in ids if (i in ok) == (i in rejects)]
    if lost or len(ok) + len(rejects) != len(ids):
        raise RuntimeError(f"eval rows not exactly once in the output: {lost[:10]}")
    preds: list[Any] = []
    for i in ids:
        row = ok.get(i)
        if row is None:
            preds.append(None)
        elif len(columns) == 1 and not gs.fields:
            preds.append(row[columns[0]])
        else:
            preds.append({c: row.get(c) for c in columns})
    return preds, rejects


def _misses(
    task: str, gs: GoldSet, preds: list[Any], rejects: Mapping[str, Mapping[str, Any]], k: int
) -> list[dict[str, Any]]:
    """The first MAX_MISSES rows the model got wrong (keywords: no gold keyword in the top k)."""
    out = []
    for i, (text, gold, pred) in enumerate(zip(gs.texts, gs.golds, preds)):
        if task == "keywords" and not gs.fields:
            prf = prf_at_k(pred, gold, k)
            wrong = prf is not None and prf.f1 == 0
        elif isinstance(gold, dict):
            wrong = pred is None or any(pred.get(f) != v for f, v in gold.items())
        else:
            wrong = pred != gold
        if wrong:
            rej = rejects.get(gs.rows[i][ID])
            shown = f"REJECTED {rej['reason']}: {rej['message']}" if rej else pred
            out.append({"index": i, ID: gs.rows[i][ID], "text": text, "gold": gold, "prediction": shown})
            if len(out) == MAX_MISSES:
                break
    return out


def write_eval_report(fs: Any, root: str, r: dict[str, Any]) -> None:
    """OUTPUT/*.png and eval.json, then report.md (last)."""
    m, base = r["model_scores"], r["baselines"]
    systems = {"model": m, **base}
    reasons = r["rejects_by_reason"]
    put(fs, join(root, "reject_reasons.png"), grouped_bars_png(
        list(reasons), {"rows": list(reasons.values())}, xlabel="reject reason", ylabel="rows",
        title=f"Rejected rows by reason ({r['rows_rejected']} of {r['n']})"))
    body: list[str] = []
    if "per_field" in m:
        fields = list(m["per_field"])
        groups = [*fields, "exact match"]
        series = {s: [100 * v["per_field"][f] for f in fields] + [100 * v["exact_match"]] for s, v in systems.items()}
        put(fs, join(root, "per_field_accuracy.png"), grouped_bars_png(
            groups, series, ymax=100, xlabel="field", ylabel="accuracy (%)",
            title=f"{r['task']}: per-field accuracy, n={r['n']}"))
        body += [md_table(["field", *systems], [[g, *(f"{vals[j]:.1f}%" for vals in series.values())]
                                                for j, g in enumerate(groups)]),
                 "![per-field accuracy](per_field_accuracy.png)"]
    elif "exact" in m:
        names = ["precision", "recall", "f1"]
        series = {s: [100 * v["exact"]["micro"][x] for x in names] for s, v in systems.items()}
        put(fs, join(root, "keywords_prf.png"), grouped_bars_png(
            ["precision", "recall", "F1"], series, ymax=100, xlabel="micro average, exact match", ylabel="score (%)",
            title=f"keywords: P/R/F1 at k={r['k']}, n={m['n']}"))
        rows = [[s, variant, avg, *(f"{v[variant][avg][x]:.4f}" for x in names)]
                for s, v in systems.items() for variant in ("exact", "normalized") for avg in ("micro", "macro")]
        body += [f"Top k = {r['k']}; {m['skipped']} rows with empty gold skipped.",
                 md_table(["system", "comparison", "average", "P", "R", "F1"], rows), "![P/R/F1](keywords_prf.png)"]
    else:
        put(fs, join(root, "confusion_matrix.png"), heatmap_png(
            m["confusion"], m["labels"], m["columns"], xlabel="predicted (rejected = no prediction)",
            ylabel="gold", title=f"classify: confusion matrix, n={r['n']}"))
        body += [md_table(["system", "accuracy", "rejected"],
                          [[s, f"{v['accuracy']:.4f}", v["rejected"]] for s, v in systems.items()]),
                 f"Majority class (of this gold slice): `{base['majority_class']['label']}`"
                 + (" (the only class in it)." if base["majority_class"]["accuracy"] == 1 else "."),
                 "### Per class (model)",
                 md_table(["label", "support", "P", "R", "F1"],
                          [[c, v["support"], v["precision"], v["recall"], v["f1"]] for c, v in m["per_class"].items()]),
                 "![confusion matrix](confusion_matrix.png)"]
    put(fs, join(root, "eval.json"), json.dumps(r, indent=2, ensure_ascii=False, default=str))
    head = [
        f"# Eval: {r['task']} on `{r['data']}`",
        f"Model `{r['model']}`" + (f" with adapter `{r['adapter']}`" if r["adapter"] else "")
        + f"; n = {r['n']} rows{_selection(r.get('selection'))}; {r['seconds']:.1f} s. "
        "All numbers: `eval.json`; the pipeline output and its run report: `run/`, `run/_report/`.",
        "## Model output",
        md_table(["rows", "ok", "rejected"], [[r["n"], f"{r['rows_ok']} ({pct(r['rows_ok'], r['n'])})",
                                               f"{r['rows_rejected']} ({pct(r['rows_rejected'], r['n'])})"]]),
        md_table(["reason", "rows"], reasons.items()) if reasons else "No rejected rows.",
        "![reject reasons](reject_reasons.png)",
        f"## Scores: model vs {', '.join(base) or 'no baseline'} (a rejected row counts as wrong)",
    ]
    misses = [f"## Misses (first {len(r['misses'])})",
              md_table(["#", ID, "text", "gold", "prediction"],
                       [[x["index"], x[ID], x["text"][:200], x["gold"], x["prediction"]] for x in r["misses"]])
              if r["misses"] else "No misses."]
    put(fs, join(root, "report.md"), "\n\n".join(head + body + misses) + "\n")


def _selection(sel: Mapping[str, Any] | None) -> str:
    if sel and sel.get("sample") is not None:
        return f" (a random sample, seed {sel['seed']})"
    if sel and sel.get("limit") is not None:
        return " (the first of the file)"
    return ""
