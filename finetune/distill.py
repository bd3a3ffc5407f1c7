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

Same command on GPUs: on one GPU the defaults switch to bf16 + gradient checkpointing; on several, launch it with
``accelerate launch --config_file <trl>/accelerate_configs/multi_gpu.yaml -m finetune.distill ...`` (or the
``deepspeed_zero2.yaml`` / ``fsdp2.yaml`` configs shipped with TRL). Under DeepSpeed ZeRO-3 use ``--plain true``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetune.config import DistillConfig, parse_config
from finetune.data import MODE_ROLES, cap_rows, read_rows, resolve_files, split_rows
from programs.run_dir import write_config

logger = logging.getLogger(__name__)


def resolve_base(base: str) -> tuple[str, str]:
    """Resolve ``--base`` into ``(HF folder, local spec)``; the embedded model is built/cached by :mod:`lms`.

    Raises:
        ValueError: For a base that already carries an adapter (merge it first with ``--merge``).
        FileNotFoundError: When the folder/hub id is not available offline.
    """
    from lms.model_store import embedded_model_dir, is_local_spec, parse_local_spec

    spec = base if is_local_spec(base) else f"local:{base}"
    parsed = parse_local_spec(spec)
    if parsed.adapter:
        raise ValueError(f"--base {base!r} carries an adapter; train on a merged folder (distill --merge) instead.")
    if parsed.is_embedded:
        return str(embedded_model_dir()), parsed.spec
    from lms.model_store import _resolve_folder

    folder = _resolve_folder(parsed.base)
    if Path(parsed.base).expanduser().is_dir():
        return folder, f"local:{Path(folder).resolve()}"
    return folder, parsed.spec  # a hub id from the offline cache


def prepare_run_dir(config: DistillConfig) -> Path:
    """The run directory: a fresh ``distill-<time>``, the named one, or (``--resume``) the existing named one."""
    parent = Path(config.output_dir)
    if config.run_name:
        name = config.run_name
        if "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
            raise ValueError(f"run_name must be a plain folder name (no '/', '\\' or '..'), got {name!r}.")
        path = parent / name
        if path.exists() and any(path.iterdir()) and not config.resume:
            raise FileExistsError(f"Run directory {path} exists; pass --resume true to continue it or pick a new name.")
        if config.resume and not path.is_dir():
            logger.info("--resume: %s does not exist yet; starting it", path)
        path.mkdir(parents=True, exist_ok=True)
        return path
    from programs.run_dir import make_run_dir

    return make_run_dir(parent, prefix="distill")


def _stage_sft(name: str, rows: list[dict], folder: str, config: DistillConfig, run_dir: Path,
               callbacks: list | None) -> dict[str, Any]:
    from finetune.trainer import train_sft

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
    _write_json(done, {k: v for k, v in metrics.items() if k != "log_history"})
    return metrics


def _write_json(path: Path, obj: Any) -> None:
    from programs.run_dir import write_json

    write_json(path, obj)


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
    rows = {role: read_rows(path, "dpo" if role == "dpo" else "sft") for role, path in files.items()}
    run_dir = prepare_run_dir(config)
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
        from finetune.artifacts import train_dpo

        stage = run_dir / "reason_dpo"
        done = stage / "metrics.json"
        if config.resume and done.is_file():
            stages["reason_dpo"] = json.loads(done.read_text(encoding="utf-8"))
        else:
            stages["reason_dpo"] = train_dpo(folder, adapters[reason_stage], rows["dpo"], config, stage,
                                             resume=config.resume)
            _write_json(done, {k: v for k, v in stages["reason_dpo"].items() if k != "log_history"})
        adapters["reason_dpo"] = stages["reason_dpo"]["adapter"]
    reasoner_adapter = adapters.get("reason_dpo", adapters[reason_stage])
    predictor_adapter = adapters[{"joint": "joint", "two_model": "predict", "direct": "direct"}[config.mode]]
    students = {"reasoner": f"{base_spec}+{Path(reasoner_adapter).resolve()}",
                "predictor": f"{base_spec}+{Path(predictor_adapter).resolve()}"}
    program_mode = {"joint": None, "two_model": "two_step", "direct": "direct"}[config.mode]
    merged: dict[str, str] = {}
    if config.merge:
        from finetune.artifacts import merge_adapter

        for adapter in dict.fromkeys([reasoner_adapter, predictor_adapter]):
            key = Path(adapter).parent.name
            merged[key] = merge_adapter(folder, adapter, run_dir / "merged" / key)
    evaluation: dict[str, Any] = {"available": False, "reason": "disabled (--evaluate false)"}
    if config.evaluate:
        from finetune.evaluate_student import before_after

        evaluation = before_after(config.from_run, base_spec, students, config.eval_split, config.eval_limit,
                                  program_mode=program_mode)
    results = {
        "run_dir": str(run_dir), "base": base_spec, "base_folder": folder, "mode": config.mode,
        "stages": {k: {m: v for m, v in s.items() if m != "log_history"} for k, s in stages.items()},
        "students": students, "merged": merged, "evaluation": evaluation,
    }
    _write_json(run_dir / "metrics.json", results)
    (run_dir / "report.md").write_text(render_report(results), encoding="utf-8")
    logger.info("Distill run finished: %s", run_dir)
    return results


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


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: parse the config, run, print where the results are."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(DistillConfig, argv)
        results = run_distill(config)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run directory: {results['run_dir']}")
    print((Path(results["run_dir"]) / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
