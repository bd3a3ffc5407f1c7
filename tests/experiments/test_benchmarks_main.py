"""python -m benchmarks: combined table assembly with stubbed benchmark functions (no model is loaded)."""

from __future__ import annotations

import json

import pytest

import benchmarks.__main__ as bm

LM_RESULT = {"variants": {
    "hf_generate": {"tok_per_s": 10.0, "pred_per_s": 0.5, "wall_s": 8.0, "peak_rss_mb": 900.0},
    "engine": {"tok_per_s": 35.0, "pred_per_s": 2.0, "wall_s": 4.0, "peak_rss_mb": 1200.0}}}
TRAIN_RESULT = {"steps": 2, "variants": {
    "plain": {"tokens_per_s": 100.0, "s_per_step": 4.0, "peak_rss_mb": 3000.0, "bf16": False},
    "fast": {"tokens_per_s": 250.0, "s_per_step": 1.6, "peak_rss_mb": 2000.0, "bf16": True}},
    "ratio_fast_vs_plain": 2.5}


def test_assemble_rows_and_ratios():
    rows = bm.assemble_rows({"lm": LM_RESULT, "train": TRAIN_RESULT})
    by = {(r["benchmark"], r["variant"]): r for r in rows}
    assert [r["benchmark"] for r in rows] == ["train", "train", "lm", "lm"]
    assert by["lm", "hf_generate"]["speed-up"] == 1.0 and by["lm", "engine"]["speed-up"] == 3.5
    assert by["train", "fast"]["speed-up"] == 2.5 and by["train", "fast"]["items/s"] == pytest.approx(1 / 1.6)
    assert by["train", "plain"]["wall s"] == 4.0 and by["lm", "engine"]["peak RSS MB"] == 1200.0
    table = bm.format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["benchmark", "variant", "tokens/s"] and len(lines) == 2 + 4
    assert "3.50x" in table and "2.50x" in table and "peak GPU MB" not in table


def test_unavailable_benchmark_is_a_row():
    rows = bm.assemble_rows({"lm": {"error": "ImportError: no module"}, "train": TRAIN_RESULT})
    assert rows[-1] == {"benchmark": "lm", "variant": "unavailable", "note": "ImportError: no module"}
    assert "ImportError" in bm.format_table(rows)
    raw = bm.assemble_rows({"lm": {"variants": {}, "raw": "table text"}})
    assert raw[0]["variant"] == "unavailable" and "raw" in raw[0]["note"]


def test_run_benchmarks_with_stubs_only_quick_and_failures():
    calls = {}

    def lm_fn(**kw):
        calls["lm"] = kw
        return json.loads(json.dumps(LM_RESULT))

    def train_fn(**kw):
        calls["train"] = kw
        raise RuntimeError("no torch here")

    res = bm.run_benchmarks(None, quick=True, lm_fn=lm_fn, train_fn=train_fn)
    assert calls["lm"]["n"] == bm.SIZES["lm_n"][0] and calls["train"]["steps"] == bm.SIZES["train_steps"][0]
    assert res["train"]["error"].startswith("RuntimeError") and res["lm"]["variants"]
    assert res["process_peak_rss_mb"] > 0
    calls.clear()
    res = bm.run_benchmarks("lm", quick=False, lm_fn=lm_fn, train_fn=train_fn)
    assert set(calls) == {"lm"} and calls["lm"]["n"] == bm.SIZES["lm_n"][1] and "train" not in res
    with pytest.raises(ValueError):
        bm.run_benchmarks("gpu")


def test_main_prints_one_combined_table(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bm, "measure_lm", lambda **kw: json.loads(json.dumps(LM_RESULT)))
    monkeypatch.setattr(bm, "measure_train", lambda **kw: json.loads(json.dumps(TRAIN_RESULT)))
    out_json = tmp_path / "bench.json"
    assert bm.main(["--quick", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert out.count("benchmark  ") == 1 and "engine" in out and "fast" in out
    saved = json.loads(out_json.read_text())
    assert len(saved["table"]) == 4 and saved["results"]["quick"] is True
    monkeypatch.setattr(bm, "measure_train", lambda **kw: (_ for _ in ()).throw(ImportError("finetune missing")))
    assert bm.main(["--only", "train"]) == 1
    assert "finetune missing" in capsys.readouterr().out


def test_phase_peak_rss_resets_to_the_phase():
    from benchmarks.lm_throughput import peak_rss_mb, reset_peak_rss

    block = bytearray(300 * 1024 * 1024)  # touch 300 MB
    high = peak_rss_mb()
    del block
    if not reset_peak_rss():
        pytest.skip("no malloc_trim or /proc/self/clear_refs on this platform")
    low = peak_rss_mb()
    assert low < high - 250  # the freed block no longer counts in the next phase's peak
    block = bytearray(100 * 1024 * 1024)  # held while the peak is read
    assert peak_rss_mb() >= low + 90 and len(block) == 100 * 1024 * 1024


def test_exact_search_floor_is_its_nodes_arithmetic_at_the_matmul_rate():
    from benchmarks.lm_throughput import exact_floor_s

    assert exact_floor_s(500, 2e9, 100.0) == 10.0  # 500 nodes x 2 GFLOP at 100 GFLOP/s
    assert exact_floor_s(592, 0.536e9, 170.0) == pytest.approx(1.867, abs=1e-3)


def test_contention_is_other_processes_share_of_the_cpus(monkeypatch, tmp_path):
    import benchmarks.contention as ct

    clock = {"wall": 100.0, "busy": 1000.0, "own": 50.0}
    monkeypatch.setattr(ct.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(ct, "busy_cpu_s", lambda: clock["busy"])
    monkeypatch.setattr(ct, "own_cpu_s", lambda: clock["own"])
    watch = ct.Contention(cpus=2)
    clock.update(wall=110.0, busy=1018.0, own=64.0)  # 10 s on 2 CPUs: 18 busy, 14 of them ours
    assert watch.share() == 0.2
    assert ct.contended({"ranking": 0.2, "floor": 0.05, "load": None}) == {"ranking": 0.2}
    watch.mark()
    clock.update(wall=120.0, busy=1038.0, own=84.0)  # only this process
    assert watch.share() == 0.0


def test_contention_reads_proc_stat_or_says_none(monkeypatch, tmp_path):
    import benchmarks.contention as ct

    if ct.busy_cpu_s() is not None:
        share = ct.Contention().share()
        assert share is None or 0.0 <= share <= 1.0
    monkeypatch.setattr(ct, "_STAT", tmp_path / "missing")
    assert ct.busy_cpu_s() is None and ct.Contention().share() is None
    (tmp_path / "stat").write_text("cpu  100 0 50 1000 10 0 0 5 0 0\ncpu0 1 2 3\n")
    monkeypatch.setattr(ct, "_STAT", tmp_path / "stat")
    assert ct.busy_cpu_s() == pytest.approx(155 / ct.os.sysconf("SC_CLK_TCK"))


def test_throughput_table_flags_contended_phases():
    from benchmarks.lm_throughput import table

    result = {"cpu": {"model": "x", "flags": ["avx2"], "torch_capability": "AVX2"}, "device": "cpu",
              "dtype": "float32", "torch_threads": 2, "matmul_gflops": 100.0,
              "floor_tok_s": {b: 10.0 for b in ("1", "8", "32")}, "hf_generate_tok_s": {b: 5.0 for b in ("1", "8", "32")},
              "engine_tok_s": {b: 8.0 for b in ("1", "8", "32")}, "prefill_tok_s": {b: 50.0 for b in ("1", "8", "32")},
              "rank_s_per_prediction": 0.4, "rank_with_prefill_s_per_prediction": 0.8, "rank_width": 10,
              "rank_first_width": 0, "rank_exact_s_per_prediction": 3.0, "rank_exact_nodes_per_prediction": 500,
              "programs": {}, "n": 4, "peak_rss_mb": 1.0, "inference_peak_rss_mb": 1.0,
              "other_cpu_share_during": {"floor": 0.01, "decode_speeds": 0.42}}
    text = table(result)
    assert "CONTENDED" in text and "42% of the CPUs during decode_speeds" in text and "floor" not in text.split(
        "CONTENDED")[1].split(";")[0]
    result["other_cpu_share_during"] = {"floor": 0.01}
    assert "CONTENDED" not in table(result)
