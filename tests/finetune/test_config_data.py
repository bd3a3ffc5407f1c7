"""Config parsing, dataset resolution and DSPy chat-data conversion (no training)."""

from __future__ import annotations

import pytest
from ft_helpers import sft_rows, write_jsonl

from finetune.config import DistillConfig, parse_config
from finetune.data import chat_to_prompt_completion, read_rows, resolve_files
from finetune.distill import main


def test_flags_override_yaml(tmp_path, compile_run):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"from_run: {compile_run}\nlora_r: 8\nlearning_rate: 0.001\nlora_target_modules: [q_proj]\n")
    config = parse_config(DistillConfig, ["--config", str(cfg), "--lora_r", "4", "--mode", "two_model"])
    assert (config.lora_r, config.learning_rate, config.mode) == (4, 0.001, "two_model")
    assert config.lora_target_modules == ["q_proj"]
    config = parse_config(DistillConfig, ["--from_run", "x", "--lora_target_modules", "q_proj,v_proj"])
    assert config.lora_target_modules == ["q_proj", "v_proj"]


def test_unknown_key_is_rejected_by_name(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("from_run: x\nlora_rank: 8\n")
    with pytest.raises(ValueError, match="lora_rank"):
        parse_config(DistillConfig, ["--config", str(cfg)])


def test_bad_type_is_rejected_by_name(tmp_path):
    with pytest.raises(ValueError, match="lora_r"):
        parse_config(DistillConfig, ["--from_run", "x", "--lora_r", "big"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("from_run: x\nlearning_rate: fast\n")
    with pytest.raises(ValueError, match="learning_rate"):
        parse_config(DistillConfig, ["--config", str(cfg)])


def test_invalid_values_and_missing_data():
    with pytest.raises(ValueError, match="mode"):
        DistillConfig(from_run="x", mode="three_model")
    with pytest.raises(ValueError, match="No data"):
        DistillConfig()
    with pytest.raises(ValueError, match="resume"):
        DistillConfig(from_run="x", resume=True)


def test_missing_dataset_file_is_named(tmp_path, compile_run, capsys):
    (compile_run / "sft_predict.jsonl").unlink()
    config = DistillConfig(from_run=str(compile_run), mode="two_model")
    with pytest.raises(FileNotFoundError, match="sft_predict.jsonl"):
        resolve_files(config)
    assert main(["--from_run", str(compile_run), "--mode", "two_model", "--output_dir", str(tmp_path)]) == 2
    assert "sft_predict.jsonl" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        resolve_files(DistillConfig(joint_file=str(tmp_path / "nope.jsonl")))


def test_malformed_rows_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": [{"role": "user", "content": "x"}], "completion": []}\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 1"):
        read_rows(path)
    path.write_text('{"prompt": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(ValueError, match="completion"):
        read_rows(path)


def test_dspy_chat_data_becomes_prompt_completion(tmp_path):
    rows = sft_rows(3)
    dspy_data = [{"messages": r["prompt"] + r["completion"]} for r in rows]
    assert chat_to_prompt_completion(dspy_data) == rows
    with pytest.raises(ValueError, match="assistant"):
        chat_to_prompt_completion([{"messages": rows[0]["prompt"]}])
    assert read_rows(write_jsonl(tmp_path / "x.jsonl", rows)) == rows


def test_export_matches_dspy_bootstrap_finetune_format():
    """compile.export rows and BootstrapFinetune's format_finetune_data split the same way."""
    import dspy

    from compile.export import sft_row
    from signatures import GenerateReason

    pred = dspy.Predict(GenerateReason)
    row = sft_row(pred, {"history": "Cashier 2010-2012"}, {"reason": "likes retail"})
    data = dspy.ChatAdapter().format_finetune_data(GenerateReason, [], {"history": "Cashier 2010-2012"},
                                                   {"reason": "likes retail"})
    assert chat_to_prompt_completion([data]) == [row]


def test_every_trl_field_works_as_flag_and_yaml_key(tmp_path, compile_run):
    from finetune.trainer import build_sft_config, dpo_kwargs

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"from_run: {compile_run}\noptim: adafactor\nhub_model_id: me/student\ndpo_loss_type: [ipo]\n")
    config = parse_config(DistillConfig, ["--config", str(cfg), "--optim", "adamw_torch", "--push_to_hub",
                                          "--torch_compile", "false", "--dpo", "true", "--dpo_label_smoothing", "0.1",
                                          "--max_steps", "3"])
    assert config.sft_args == {"optim": "adamw_torch", "hub_model_id": "me/student", "push_to_hub": True,
                               "torch_compile": False}
    assert config.dpo_args == {"loss_type": ["ipo"], "label_smoothing": 0.1}
    args = build_sft_config(config, tmp_path / "stage", has_eval=False)
    assert (args.optim, args.hub_model_id, args.push_to_hub, args.max_steps) == ("adamw_torch", "me/student", True, 3)
    assert not args.bf16 or not args.gradient_checkpointing  # CPU-safe defaults stay
    dpo = dpo_kwargs(config, tmp_path / "dpo")
    assert dpo["optim"] == "adamw_torch" and dpo["loss_type"] == ["ipo"] and dpo["label_smoothing"] == 0.1


def test_unknown_trl_key_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"'optimm'.*Did you mean optim.*Valid keys.*: \[") as err:
        parse_config(DistillConfig, ["--from_run", "x", "--optimm", "adamw_torch"])
    assert "push_to_hub" in str(err.value) and "dpo_loss_type" in str(err.value)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("from_run: x\ndeepspeedd: ds.json\n")
    with pytest.raises(ValueError, match="deepspeedd.*Did you mean deepspeed"):
        parse_config(DistillConfig, ["--config", str(cfg)])
    with pytest.raises(ValueError, match="set by the distill run"):
        DistillConfig(from_run="x", sft_args={"eval_strategy": "no"})


def test_invalid_trl_value_fails_before_a_run_dir_exists(tmp_path, compile_run, capsys):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:  # a flag: rejected by HfArgumentParser, as in TRL's scripts
        main(["--from_run", str(compile_run), "--optim", "no_such_optimizer", "--output_dir", str(out)])
    assert exit_info.value.code == 2 and "no_such_optimizer" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"from_run: {compile_run}\noutput_dir: {out}\noptim: no_such_optimizer\n")
    assert main(["--config", str(cfg)]) == 2  # a YAML value: TRL's own validation, before anything is written
    assert "no_such_optimizer" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_help_lists_the_trl_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(DistillConfig, ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--lora_r" in text and "deepspeed" in text and "dpo_loss_type" in text


def test_demo_data_help_is_not_a_path(tmp_path, capsys, monkeypatch):
    from finetune import demo_data

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        demo_data.main(["--help"])
    assert exit_info.value.code == 0 and "OUT_DIR" in capsys.readouterr().out
    assert not (tmp_path / "--help").exists()
    with pytest.raises(SystemExit):
        demo_data.main(["--out"])  # an unknown/incomplete flag is an error, never a folder name
    assert list(tmp_path.iterdir()) == []


def _joint_rows(n_reason: int, n_predict: int, n_joint: int) -> list[dict]:
    def row(fields, i):
        answer = "\n\n".join(f"[[ ## {f} ## ]]\nvalue {i}" for f in fields) + "\n\n[[ ## completed ## ]]"
        return {"prompt": [{"role": "user", "content": f"history {i}"}],
                "completion": [{"role": "assistant", "content": answer}]}

    # the layout of sft_joint.jsonl: all reason-step rows first, then predict-step rows, then single-call rows
    return ([row(["reason"], i) for i in range(n_reason)] + [row(["occupation"], i) for i in range(n_predict)]
            + [row(["reason", "occupation"], i) for i in range(n_joint)])


def test_capped_joint_rows_keep_every_step_and_are_seeded():
    from finetune.data import cap_rows, row_step

    rows = _joint_rows(20, 20, 10)
    capped = cap_rows(rows, 8, seed=0)
    steps = [row_step(r) for r in capped]
    assert len(capped) == 8 and set(steps) == {"reason", "occupation", "reason+occupation"}
    assert steps.count("reason") == steps.count("occupation") == 3 and steps.count("reason+occupation") == 2
    assert capped == cap_rows(rows, 8, seed=0) and capped != cap_rows(rows, 8, seed=1)
    assert [rows.index(r) for r in capped] == sorted(rows.index(r) for r in capped), "file order kept"
    assert capped != rows[:8]
    assert len(cap_rows(rows, 2, seed=0)) == 2 and cap_rows(rows, None, 0) == rows and cap_rows(rows, 99, 0) == rows


def test_model_card_names_the_base_model(tmp_path):
    from finetune.artifacts import _name_base, base_model_id

    hub, named = base_model_id("local:gemma-3-270m")
    assert hub == "google/gemma-3-270m" and "gemma-3-270m" in named
    folder = tmp_path / "mymodel"
    folder.mkdir()
    (folder / "config.json").write_text('{"_name_or_path": "Qwen/Qwen2.5-0.5B"}')
    assert base_model_id(f"local:{folder}")[0] == "Qwen/Qwen2.5-0.5B"
    (folder / "config.json").write_text("{}")
    hub, named = base_model_id(str(folder))
    assert hub is None and str(folder.resolve()) in named
    trl_card = ("---\nlibrary_name: transformers\n---\n\n# Model Card for joint\n\nThis model is a fine-tuned version "
                "of [None](https://huggingface.co/None).\n\n## Quick start\n\n```python\ngenerator = pipeline("
                "\"text-generation\", model=\"None\")\n```\n\n## Training procedure\n\nSFT.\n")
    card = _name_base(trl_card, "google/gemma-3-270m", "`local:gemma-3-270m`", tmp_path / "adapter",
                      "local:gemma-3-270m")
    assert "[google/gemma-3-270m](https://huggingface.co/google/gemma-3-270m)" in card
    assert "base_model: google/gemma-3-270m" in card.split("\n---", 1)[0]
    assert "None" not in card and "## Training procedure" in card
    assert f'from_pretrained("local:gemma-3-270m+{(tmp_path / "adapter").resolve()}")' in card


def test_train_steps_keep_the_named_steps_and_fail_by_name(tmp_path, compile_run, capsys):
    from finetune.data import row_step, select_steps

    rows = _joint_rows(6, 5, 4)
    single = select_steps(rows, ["reason+occupation"])
    assert len(single) == 4 and {row_step(r) for r in single} == {"reason+occupation"}
    assert len(select_steps(rows, ["reason", "occupation"])) == 11 and select_steps(rows, None) == rows
    assert DistillConfig(from_run="x", train_steps="reason, reason+occupation").train_steps == [
        "reason", "reason+occupation"]
    with pytest.raises(ValueError, match="train_steps"):
        DistillConfig(from_run="x", train_steps=["joint"])
    with pytest.raises(ValueError, match=r"keeps no row of f\.jsonl, whose rows train \{'reason': 6"):
        select_steps(rows[:6], ["occupation"], "f.jsonl")
    out = tmp_path / "out"
    # the fixture's joint file holds reason rows only: the run stops before a run directory exists
    assert main(["--from_run", str(compile_run), "--train_steps", "reason+occupation", "--output_dir", str(out)]) == 2
    assert "sft_joint.jsonl" in capsys.readouterr().err and not out.exists()
