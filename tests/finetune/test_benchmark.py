"""finetune.benchmark: the lever variants train on the same stratified rows and report their ratios (tiny model)."""

from __future__ import annotations

from ft_helpers import sft_rows

from finetune.benchmark import VARIANTS, format_table, run_benchmark
from finetune.config import DistillConfig


def test_lever_variants_run_and_report_ratios(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTOCC_DTYPE", "bfloat16")  # the rule on a CPU with native bf16; the subprocesses inherit it
    config = DistillConfig(joint_file="-", per_device_train_batch_size=2, max_length=256, lora_r=4, lora_alpha=8,
                           lora_target_modules=["q_proj", "v_proj"])
    names = ["fast", "fast_no_grouping", "fast_batch1_accum4", "fast_no_lora_dropout", "fast_fp32_weights"]
    res = run_benchmark(str(tiny_model_dir), sft_rows(40), config, steps=1, variants=names, out_dir=tmp_path)
    assert list(res["variants"]) == names
    assert res["rows"] == 4 * 2  # the largest effective batch (1 x 4) times steps + 1
    assert all(v["tokens_per_s"] > 0 and v["peak_rss_mb"] > 0 for v in res["variants"].values())
    assert res["variants"]["fast_no_lora_dropout"]["lora_dropout"] == 0.0
    assert res["variants"]["fast"]["lora_dropout"] == config.lora_dropout > 0
    fast, fp32_weights = res["variants"]["fast"], res["variants"]["fast_fp32_weights"]
    assert fast["bf16"] and fast["base_dtype"] == "bfloat16"
    assert fp32_weights["bf16"] and fp32_weights["base_dtype"] == "float32"
    assert set(k for k in res if k.startswith("ratio")) == {"ratio_fast_vs_fast_no_grouping",
                                                           "ratio_fast_vs_fast_batch1_accum4",
                                                           "ratio_fast_vs_fast_no_lora_dropout",
                                                           "ratio_fast_vs_fast_fp32_weights"}
    table = format_table(res)
    assert "fast_batch1_accum4" in table and "ratio_fast_vs_fast_no_grouping" in table
    assert {"fast_fp32", "fast_batch8", "fast_torch_compile"} <= set(VARIANTS)
    assert VARIANTS["fast_torch_compile"]["sft_args"] == {"torch_compile": True}
