"""Distill a compile run's oracle traces into a small student: ``python -m finetune.distill``.

Examples::

    python -m finetune.distill --from_run runs/compile/run-1 --mode joint
    python -m finetune.distill --config configs/distill_demo.yaml --max_steps 20 --dpo true
    python -m finetune.distill --from_run RUN --mode two_model --base local:/models/gemma-3-270m --merge true
    python -m finetune.distill --config cfg.yaml --run_name distill-a --resume true   # continue a run

``joint`` trains one LoRA adapter on ``sft_joint.jsonl``; ``two_model`` trains one adapter per step (``reason`` on
``sft_reason.jsonl``, ``predict`` on ``sft_predict.jsonl``). ``--dpo`` continues the reason-step adapter with DPO
on ``dpo_reason.jsonl``. The run directory holds ``config.yaml`` (secrets redacted), one folder per stage
(``checkpoint-*``, ``adapter/`` in safetensors with the tokenizer and a model card, ``training_curves.png``,
``metrics.json``), ``merged/`` (with ``--merge``), ``metrics.json`` and ``report.md``. Students load as
``local:<base>+<run>/<stage>/adapter`` through :func:`lms.load`.

Every TRL ``SFTConfig`` / ``TrainingArguments`` field works as a flag or YAML key (``--optim``, ``--deepspeed``,
``--push_to_hub``, ``--hub_model_id``, ``--torch_compile``, ``--report_to``,
...), DPOConfig fields as ``--dpo_<field>`` (:mod:`finetune.config`).

Same command on GPUs: on one GPU the defaults switch to bf16 + gradient checkpointing and TRL's own loss path; on
several, ``accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m finetune.distill ...`` (or
``configs/accelerate/deepspeed_zero2.yaml`` / ``deepspeed_zero3.yaml``; ``pip install 'nextocc[deepspeed]'``). All
ranks share one run directory (the main process names it and broadcasts the name); config, provenance, reports,
plots, model cards, merge and evaluation are written by the main process only.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compile.run_reader import compile_mode
from finetune.artifacts import merge_adapter
from finetune.config import DistillConfig, parse_config
from finetune.data import MODE_ROLES, cap_rows, read_rows, resolve_files, select_steps, split_rows
from finetune.evaluate_student import before_after
from finetune.hybrid_student import hybrid_source, install_baseline
from lms.model_store import embedded_model_dir, is_local_spec, parse_local_spec, resolve_folder
from programs.manifest import MANIFEST_FORMAT
from runkit.cli import run_cli
from runkit.files import write_config, write_json
from runkit.provenance import write_provenance
from runkit.run_dir import make_run_dir

logger = logging.getLogger(__name__)


def resolve_base(base: str) -> tuple[str, str]:
    """Resolve ``--base`` into ``(HF folder, local spec)``; the embedded model is built/cached by :mod:`lms`.

    Raises:
        ValueError: For a base that already carries an adapter (merge it first with ``--merge``).
        FileNotFoundError: When the folder/hub id is not available offline.
    """
    spec = base if is_local_spec(base) else f"local:{base}"
    parsed = parse_local_spec(spec)
    if parsed.adapter:
        raise ValueError(f"--base {base!r} carries an adapter; train on a merged folder (distill --merge) instead.")
    if parsed.is_embedded:
        return str(embedded_model_dir()), parsed.spec

    folder = resolve_folder(parsed.base)
    if Path(parsed.base).expanduser().is_dir():
        return folder, f"local:{Path(folder).resolve()}"
    return folder, parsed.spec  # a hub id from the offline cache


def distributed_state() -> Any:
    """Accelerate's ``PartialState`` (one process without a launcher; every rank under ``accelerate launch``)."""
    from accelerate import PartialState

    return PartialState()


def _shared_name(state: Any, name: str | None) -> str | None:
    """The run name every rank uses: the main process's (generated) name, broadcast to the other ranks."""
    if state.num_processes <= 1:
        return name
    from accelerate.utils import broadcast_object_list

    box = [name]
    broadcast_object_list(box, from_process=0)
    return box[0]


def prepare_run_dir(config: DistillConfig, state: Any = None) -> Path:
    """The run directory: a fresh ``distill-<time>``, the named one, or (``--resume``) the existing named one.

    Under ``accelerate launch`` only the main process creates it; the others wait and use the same folder.
    """
    import datetime as _dt

    state = state or distributed_state()
    parent = Path(config.output_dir)
    name = config.run_name
    if config.run_name:
        if "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
            raise ValueError(f"run_name must be a plain folder name (no '/', '\\' or '..'), got {name!r}.")
        path = parent / name
        if path.exists() and any(path.iterdir()) and not config.resume:
            raise FileExistsError(f"Run directory {path} exists; pass --resume true to continue it or pick a new name.")
        if config.resume and not path.is_dir():
            logger.info("--resume: %s does not exist yet; starting it", path)
    state.wait_for_everyone()  # every rank checked before the main process creates the folder
    path = None
    if state.is_main_process:
        if name is None and state.num_processes > 1:
            name = "distill-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            while (parent / name).exists():
                name += "-2"
        path = make_run_dir(parent, name, prefix="distill", resume=bool(config.run_name and config.resume))
        name = path.name
    name = _shared_name(state, name)
    state.wait_for_everyone()
    return path or parent / name


def check_training_args(config: DistillConfig) -> None:
    """Builds the stages' ``SFTConfig`` (and ``DPOConfig``) once before anything runs, so an invalid TRL value
    (``--optim nope``) fails with TRL's message before a run directory is made."""
    import tempfile

    from finetune.trainer import build_sft_config  # deferred: trl/peft, not needed to parse the config

    with tempfile.TemporaryDirectory() as tmp:
        try:
            build_sft_config(config, tmp, has_eval=config.eval_fraction > 0)
            if config.dpo:
                from trl import DPOConfig

                from finetune.trainer import dpo_kwargs  # deferred: trl/peft

                DPOConfig(**dpo_kwargs(config, tmp))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Invalid TRL training setting: {exc}") from None


def _stage_sft(name: str, rows: list[dict], folder: str, config: DistillConfig, run_dir: Path,
               callbacks: list | None) -> dict[str, Any]:
    from finetune.trainer import train_sft  # deferred: trl/peft

    stage = run_dir / name
    done = stage / "metrics.json"
    if config.resume and done.is_file() and (stage / "adapter").is_dir():
        logger.info("Stage %s already finished; skipping", name)
        return json.loads(done.read_text(encoding="utf-8"))
    if config.max_train_rows:
        rows = cap_rows(rows, config.max_train_rows, config.seed)  # seeded, stratified by step (not the top)
    train, evals = split_rows(rows, config.eval_fraction, config.seed)
    logger.info("SFT stage %s: %d train / %d eval rows", name, len(train), len(evals))
    metrics = train_sft(folder, train, evals, config, stage, resume=config.resume, callbacks=callbacks)
    if distributed_state().is_main_process:
        write_json(done, {k: v for k, v in metrics.items() if k != "log_history"})
    return metrics


def run_distill(config: DistillConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Run SFT (and optionally DPO, merge and the before/after program evaluation) for one config.

    Args:
        config: The distill configuration.
        callbacks: Extra ``TrainerCallback`` objects for the SFT stages (the Optuna pruner uses this).

    Returns:
        Results: ``run_dir``, per-stage metrics, student specs (``reasoner``/``predictor``), merged folders,
        ``evaluation`` (before/after or why it was skipped).
    """
    files = resolve_files(config)
    hybrid = hybrid_source(config) if config.mode == "hybrid" else None  # fails before any training
    rows = {role: read_rows(path, "dpo" if role == "dpo" else "sft") for role, path in files.items()}
    rows.update({role: select_steps(rows[role], config.train_steps, str(files[role]))  # fails before any training
                 for role in MODE_ROLES[config.mode]})
    check_training_args(config)
    state = distributed_state()
    main = state.is_main_process
    run_dir = prepare_run_dir(config, state)
    if main:
        write_config(run_dir, config)
    folder, base_spec = resolve_base(config.base)
    logger.info("Distill run %s: base %s (%s), mode %s", run_dir, base_spec, folder, config.mode)
    stages: dict[str, Any] = {}
    names = MODE_ROLES[config.mode]
    for name in names:
        stages[name] = _stage_sft(name, rows[name], folder, config, run_dir, callbacks)
    reason_stage = names[0]
    adapters = {name: stages[name]["adapter"] for name in names}
    if config.dpo:
        from finetune.trainer import train_dpo  # deferred: trl/peft

        stage = run_dir / "reason_dpo"
        done = stage / "metrics.json"
        if config.resume and done.is_file():
            stages["reason_dpo"] = json.loads(done.read_text(encoding="utf-8"))
        else:
            state.wait_for_everyone()  # the SFT adapter is on disk before every rank loads it
            stages["reason_dpo"] = train_dpo(folder, adapters[reason_stage], rows["dpo"], config, stage,
                                             resume=config.resume)
            if main:
                write_json(done, {k: v for k, v in stages["reason_dpo"].items() if k != "log_history"})
        adapters["reason_dpo"] = stages["reason_dpo"]["adapter"]
    reasoner_adapter = adapters.get("reason_dpo", adapters[reason_stage])
    predictor_adapter = adapters[{"joint": "joint", "two_model": "predict", "direct": "direct",
                                  "hybrid": "hybrid"}[config.mode]]
    students = {"reasoner": f"{base_spec}+{Path(reasoner_adapter).resolve()}",
                "predictor": f"{base_spec}+{Path(predictor_adapter).resolve()}"}
    program_mode = {"joint": None, "two_model": "two_step", "direct": "direct", "hybrid": "joint"}[config.mode]
    merged: dict[str, str] = {}
    results = {"run_dir": str(run_dir), "base": base_spec, "base_folder": folder, "mode": config.mode,
               "program_mode": program_mode or compile_mode(config.from_run),
               "stages": {k: {m: v for m, v in s.items() if m != "log_history"} for k, s in stages.items()},
               "students": students, "lora_r": config.lora_r, "completion_head": any(s.get("completion_head") for s in stages.values())}
    if hybrid is not None and main:
        results["hybrid"] = {"baseline": install_baseline(run_dir, hybrid[0]), "k_candidates": hybrid[1]}
    if not main:  # merge, evaluation and every report belong to the main process
        return {**results, "merged": {}, "evaluation": {"available": False, "reason": "not the main process"},
                "main_process": False}
    if config.merge:
        for adapter in dict.fromkeys([reasoner_adapter, predictor_adapter]):
            key = Path(adapter).parent.name
            merged[key] = merge_adapter(folder, adapter, run_dir / "merged" / key)
    evaluation: dict[str, Any] = {"available": False, "reason": "disabled (--evaluate false)"}
    if config.evaluate:
        evaluation = before_after(config.from_run, base_spec, students, config.eval_split, config.eval_limit,
                                  program_mode=program_mode, hybrid=_hybrid_options(run_dir, results))
    results.update(merged=merged, evaluation=evaluation)
    write_json(run_dir / "metrics.json", results)
    write_json(run_dir / "nextocc.json", student_manifest(run_dir, results, reasoner_adapter, predictor_adapter))
    (run_dir / "report.md").write_text(render_report(results), encoding="utf-8")

    write_provenance(run_dir, dtype="bfloat16" if _uses_bf16(config) else "float32",
                     extra={"completion_head": results["completion_head"]})
    logger.info("Distill run finished: %s", run_dir)
    return results


def _uses_bf16(config: DistillConfig) -> bool:
    from finetune.trainer import device_defaults  # deferred: trl/peft

    return bool(device_defaults(config)["bf16"])


def student_manifest(run_dir: Path, results: dict[str, Any], reasoner_adapter: str, predictor_adapter: str
                     ) -> dict[str, Any]:
    """``nextocc.json`` of a distill run: ``NextOccupation.load(run_dir)`` builds the zero-shot program on the
    student adapters (paths relative to the run, so the folder can move)."""
    def rel(path: str) -> str:
        return Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()

    out = {"format": MANIFEST_FORMAT, "class": "NextOccupation", "mode": results["program_mode"],
           "lms": dict(results["students"]), "base": results["base"],
           "adapters": {"reasoner": rel(reasoner_adapter), "predictor": rel(predictor_adapter)},
           "k": 5, "top1": "answer", "data_dir": None, "program": None}
    if results.get("hybrid"):
        out.update({"class": "HybridNextOccupation", **results["hybrid"]})
    return out


def _hybrid_options(run_dir: Path, results: dict[str, Any]) -> dict[str, Any] | None:
    """``{"baseline": path, "k_candidates": k}`` of a hybrid run's student evaluation (None otherwise)."""
    if not results.get("hybrid"):
        return None
    return {"baseline": str(Path(run_dir) / results["hybrid"]["baseline"]),
            "k_candidates": results["hybrid"]["k_candidates"]}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_report(results: dict[str, Any]) -> str:
    """Markdown report: stages (losses, throughput), students, and the before/after evaluation rows."""
    lines = [f"# Distill run `{Path(results['run_dir']).name}`", "",
             f"Base: `{results['base']}` — mode: `{results['mode']}`", "",
             "| stage | steps | first loss | last loss | eval loss | tokens/s | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for name, s in results["stages"].items():
        throughput = s.get("throughput") or {}
        lines.append(f"| {name} | {s.get('global_step')} | {_fmt(s.get('first_loss'))} | {_fmt(s.get('last_loss'))} "
                     f"| {_fmt(s.get('eval_loss', ''))} | {throughput.get('tokens_per_s', '')} "
                     f"| {throughput.get('peak_rss_mb', '')} |")
    lines += ["", "Students (load with `lms.load(spec)`):", ""]
    lines += [f"- {role}: `{spec}`" for role, spec in results["students"].items()]
    if results.get("merged"):
        lines += ["", "Merged weights (serve with vLLM/SGLang):", ""]
        lines += [f"- {k}: `{v}`" for k, v in results["merged"].items()]
    lines += ["", "Serve with vLLM (one server, one LoRA module per step) and run the program on it:", "", "```",
              vllm_command(results), "```", "",
              "```", predict_command(results), "```"]
    ev = results["evaluation"]
    lines += ["", "## Program evaluation (before vs after)", ""]
    if ev.get("before") and ev["before"].get("available"):
        keys = list(ev["before"]["metrics"])
        lines += ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for label, part in (("before (base)", ev["before"]), ("after (student)", ev.get("after", {}))):
            if part.get("available"):
                lines.append(f"| {label} | " + " | ".join(_fmt(part["metrics"].get(k)) for k in keys) + " |")
            else:
                lines.append(f"| {label} | unavailable: {part.get('reason')} |")
    else:
        lines.append(f"Not evaluated: {ev.get('reason')}. The adapters above are complete; evaluate them later with "
                     "`finetune.evaluate_student.evaluate_student`.")
    return "\n".join(lines) + "\n"


def _adapter_modules(results: dict[str, Any]) -> dict[str, str]:
    """``{module name: adapter folder}`` of the students (one module when both steps share the adapter)."""
    out: dict[str, str] = {}
    for role in ("reasoner", "predictor"):
        adapter = results["students"][role].split("+", 1)[1]
        name = Path(adapter).parent.name
        out.setdefault(name, adapter)
    return out


def vllm_command(results: dict[str, Any]) -> str:
    """The ``vllm serve`` command that serves the base model with the run's adapters as LoRA modules."""
    mods = " ".join(f"{name}={path}" for name, path in _adapter_modules(results).items())
    rank = results.get("lora_r") or 16
    lora_rank = next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)
    return (f"vllm serve {results['base_folder']} --enable-lora --max-lora-rank {lora_rank} --lora-modules {mods} "
            "--port 8000")


def predict_command(results: dict[str, Any], api_base: str = "http://localhost:8000/v1") -> str:
    """``programs.predict`` on the served modules (``hosted_vllm/<module>``; occupation constrained server-side)."""
    names = {role: Path(results["students"][role].split("+", 1)[1]).parent.name for role in ("reasoner", "predictor")}
    # a hybrid student runs inside its saved program (nextocc.json + baseline.json of this run)
    program = results["run_dir"] if results.get("hybrid") else results.get("program_mode") or "two_step"
    lm = f"'{{model: hosted_vllm/{names['reasoner']}, api_base: {api_base}, temperature: 0}}'"
    cmd = f"python -m programs.predict --program {program} --lm {lm}"
    if names["predictor"] != names["reasoner"]:
        cmd += f" --predictor_lm '{{model: hosted_vllm/{names['predictor']}, api_base: {api_base}, temperature: 0}}'"
    return cmd + " --input people.jsonl --output_dir runs/predict"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: parse the config, run, print where the results are."""

    def report(results: dict[str, Any]) -> int:
        if results.get("main_process") is False:  # another rank of accelerate launch: the main process reports
            return 0
        print(f"run directory: {results['run_dir']}")
        print((Path(results["run_dir"]) / "report.md").read_text(encoding="utf-8"))
        return 0

    return run_cli(lambda: parse_config(DistillConfig, argv), run_distill, report, error_code=2)


if __name__ == "__main__":
    sys.exit(main())
