"""``python -m compile.optimize``: oracle reasons, the optimized-prompt baseline, and TRL exports.

One invocation writes one run directory (``--output_dir``/``--run_name``; re-using a name resumes):

1. ``candidates.jsonl`` -- N judged candidate reasons per training example (:mod:`compile.candidates`), appended and
   flushed; the best passing one per example is its oracle reason (:mod:`compile.selection`).
2. ``program.json`` + ``nextocc.json`` (``NextOccupation.load(run_dir)``) + ``metrics.json`` -- the chosen DSPy optimizer compiles the program with the judge metric on
   the training split (oracle reasons serve as labeled demos); zero-shot and optimized programs are scored on
   dev/test.
3. ``sft_reason.jsonl``, ``sft_predict.jsonl``, ``sft_joint.jsonl``, ``sft_direct.jsonl``, ``dpo_reason.jsonl``
   (:mod:`compile.export`), with ``hybrid_baseline`` also ``baseline.json`` and ``sft_hybrid_joint.jsonl`` (the hybrid
   student's candidate-aware traces, :mod:`compile.hybrid_export`), and ``data_card.md``.
4. ``report.md``, ``config.yaml`` (secrets redacted), ``metrics.json``, ``log.txt``.

Example::

    python -m compile.optimize --config configs/demo.yaml --n_train 8
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dspy

from careers.datasets import load_splits
from careers.onet import OnetTaxonomy
from careers.splits import sample_per_person
from careers.transitions import TransitionStats
from compile.candidates import CandidateSteps, TooManyErrors, example_id, generate_candidates, one_line
from compile.config import OptimizeConfig
from compile.export import export_traces
from compile.hybrid_export import export_hybrid_traces
from compile.optimizers import build_optimizer, compile_program, describe_changes
from compile.report import write_data_card, write_failure_report, write_report
from compile.selection import SelectionRule, dpo_pairs, latest_records, score_summary, select_oracles
from lms import DEFAULT_SPEC, is_local, usage
from lms.model_store import embedded_model_dir
from lms.resolve import lm_spec, resolve_lm
from metrics.grounding import grounding_check, likelihood_utility
from metrics.heuristic_judge import HeuristicJudge, TitleIndex, gold_supported, implied_occupations
from metrics.judge import ReasonJudge
from metrics.judge_metric import JudgeMetric
from programs.evidence_teacher import EvidenceTeacher
from programs.manifest import MANIFEST_FILE
from programs.next_occupation import NextOccupation
from programs.scoring import score_program
from runkit.cli import print_error, run_cli
from runkit.config import load_config
from runkit.files import JsonlWriter, read_jsonl, write_config, write_json
from runkit.provenance import write_provenance
from runkit.run_dir import RunFailed, make_run_dir
from signatures.rationalize import GenerateReasonFromGold

logger = logging.getLogger(__name__)


def compile_data(config: OptimizeConfig) -> tuple[Any, list[dspy.Example], list[dspy.Example], list[dspy.Example]]:
    """The dataset splits and the train/dev/test examples of a compile run (seeded per-person samples)."""
    splits = load_splits(config.dataset, config.data_dir, config.seed, synthetic_persons=config.synthetic_persons,
                         motives=config.motives)
    return (splits, sample_per_person(splits.train, config.n_train, config.seed),
            sample_per_person(splits.dev, config.n_dev, config.seed + 1),
            sample_per_person(splits.test, config.n_test, config.seed + 2))


def training_statistics(splits: Any) -> TransitionStats:
    """Transition statistics of the whole training split of ``splits`` (dev and test persons never enter them)."""
    return TransitionStats.fit(splits.train)


def compile_splits(config: OptimizeConfig) -> tuple[list[dspy.Example], list[dspy.Example], list[dspy.Example]]:
    """The train/dev/test examples of a compile run (seeded per-person samples); reused by distill's evaluation."""
    return compile_data(config)[1:]


def program_lm_spec(config: OptimizeConfig) -> str:
    """The LM spec of the program's steps: ``predictor_lm``, else the teacher's LM (Gemma for the evidence teacher)."""
    if config.predictor_lm:
        return config.predictor_lm
    return DEFAULT_SPEC if config.evidence_teacher else config.teacher_lm


def _abs_dir(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path and Path(path).is_dir() else None


def build_steps(program: NextOccupation, judge: Any, config: OptimizeConfig, teacher: Any = None
                ) -> CandidateSteps:
    """The teacher/predictor/judge callables of one candidate (``teacher``: an EvidenceTeacher, else the LM)."""
    taxonomy = program.taxonomy
    rationalizer = dspy.Predict(GenerateReasonFromGold)
    sampling = {"temperature": config.temperature}
    index = TitleIndex(taxonomy, getattr(judge, "stats", None) or getattr(teacher, "stats", None))

    def reason(example: dspy.Example, index: int) -> str:
        if teacher is not None:
            return teacher(history=example.history, career=example.get("career"), occupation=example.occupation,
                           onet_code=example.get("onet_code"), gold_codes=example.get("gold_codes"),
                           candidate=index, n=config.candidates_per_person, rationalize=config.rationalize).reason
        cfg = {**sampling, "rollout_id": config.seed * 100_003 + index + 1}
        with dspy.context(lm=program.reasoner_lm or dspy.settings.lm):
            if config.rationalize:
                return rationalizer(history=example.history, occupation=example.occupation, config=cfg).reason
            return program.reasoner(history=example.history, config=cfg).reason

    def predict(example: dspy.Example, text: str) -> dspy.Prediction:
        if not config.predict_candidates:
            return dspy.Prediction(occupation=None, onet_code=None, matched=False, skipped=True)
        with dspy.context(lm=program.predictor_lm or dspy.settings.lm):
            raw = program.predictor(history=example.history, reason=text).occupation
        match = taxonomy.normalize(str(raw or ""))
        return dspy.Prediction(occupation=match.title or raw, onet_code=match.code, matched=match.matched)

    def judge_step(example: dspy.Example, text: str) -> dspy.Prediction:
        extra = {"gold_codes": example.get("gold_codes")} if getattr(judge, "accepts_gold_codes", False) else {}
        return judge(history=example.history, reason=text, occupation=example.occupation, **extra)

    def signals(example: dspy.Example, text: str, pred: dspy.Prediction) -> dict:
        ground = grounding_check(text, example.history)
        implied = implied_occupations(text, example.history, index)
        gold = list(example.get("gold_codes") or [example.get("onet_code")])
        out = {"grounding": round(ground.score, 3), "ungrounded": ground.ungrounded_texts, "implied": implied,
               "gold_supported": gold_supported(implied, gold)}
        lm = program.predictor_lm
        if config.predict_candidates and is_local(lm):
            out["likelihood_utility"] = likelihood_utility(lm, example.history, text, example.occupation)
        return out

    return CandidateSteps(reason=reason, predict=predict, judge=judge_step, signals=signals)


def build_judge(config: OptimizeConfig, taxonomy: OnetTaxonomy, stats: TransitionStats | None,
                judge_lm: Any = None, predictor_lm: Any = None) -> Any:
    """The judge of a run: the LM-free :class:`HeuristicJudge` for ``judge_lm: heuristic``, else the LM judge."""
    if judge_lm is None and config.judge_lm == "heuristic":
        likelihood_lm = predictor_lm if config.judge_likelihood and is_local(predictor_lm) else None
        if config.judge_likelihood and likelihood_lm is None:
            logger.warning("judge_likelihood needs a local predictor LM; utility stays LM-free.")
        return HeuristicJudge(taxonomy, stats, weights=config.weights, thresholds=config.thresholds,
                              predictor_lm=likelihood_lm, minority_penalty=config.judge_minority_penalty)
    judge_lm = judge_lm or lm_spec(config.judge_lm, role="judge_lm", api_base=config.api_base,
                                   max_tokens=config.max_tokens)
    return ReasonJudge(judge_lm, weights=config.weights, thresholds=config.thresholds, retries=1)


def build_teacher(config: OptimizeConfig, taxonomy: OnetTaxonomy, stats: TransitionStats | None,
                  teacher: Any = None) -> EvidenceTeacher | None:
    """The EvidenceTeacher of ``teacher_lm: evidence[+lm]`` (or the given one), else None (the LM teacher)."""
    if teacher is not None:
        return teacher
    if not config.evidence_teacher:
        return None
    rewrite = config.teacher_lm.partition("+")[2] or None
    rewrite_lm = resolve_lm(lm_spec(rewrite, role="teacher_lm", api_base=config.api_base,
                                    max_tokens=config.max_tokens))
    return EvidenceTeacher(taxonomy, stats, seed=config.seed, rewrite_lm=rewrite_lm,
                           tokenizer=load_tokenizer(config.student_tokenizer),
                           statistics=config.teacher_statistics, moves=config.teacher_moves)


def load_tokenizer(spec: str | None) -> Any:
    """The tokenizer of ``student_tokenizer`` (see the config help), or None for the length estimate.

    Raises:
        FileNotFoundError: A path that holds no tokenizer.
    """
    if not spec:
        return None
    from tokenizers import Tokenizer

    if spec == "embedded":
        path = Path(embedded_model_dir()) / "tokenizer.json"
    else:
        path = Path(spec)
        path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"student_tokenizer {spec!r}: {path} not found; give a tokenizer.json or a model folder.")
    return Tokenizer.from_file(str(path))


def offline_summary(candidates: list[dict], oracles: dict[str, dict], summary: dict) -> dict:
    """``judge_histograms``, ``grounding_pass_rate`` and ``oracle_gold_support_rate`` of a run."""
    made = [c for c in latest_records(candidates) if not c.get("error") and c.get("signals")]
    grounded = [c for c in made if c["signals"].get("grounding") == 1.0]
    supported = [o for o in oracles.values() if (o.get("signals") or {}).get("gold_supported")]
    return {
        "judge_histograms": {c: summary[c]["histogram"] for c in ("factuality", "coherence", "utility")},
        "grounding_pass_rate": round(len(grounded) / len(made), 4) if made else None,
        "oracle_gold_support_rate": round(len(supported) / len(oracles), 4) if oracles else None,
    }


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _with_oracle_reasons(train: list[dspy.Example], oracles: dict[str, dict]) -> list[dspy.Example]:
    out = []
    for ex in train:
        oracle = oracles.get(example_id(ex))
        out.append(ex.copy(reason=oracle["reason"]) if oracle else ex)
    return out


def run_optimize(config: OptimizeConfig, *, teacher_lm: Any = None, judge_lm: Any = None, teacher: Any = None,
                 on_phase: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Runs the compile pipeline (see the module docstring) and returns its results dict.

    Args:
        config: The run configuration.
        teacher_lm: A ready ``dspy.LM`` to use instead of ``config.teacher_lm`` (tests, notebooks).
        judge_lm: A ready ``dspy.LM`` to use instead of ``config.judge_lm``.
        teacher: A ready :class:`~programs.evidence_teacher.EvidenceTeacher` (its statistics fitted on the training
            split) to use instead of ``config.teacher_lm``.
        on_phase: Called as ``on_phase(name, partial_results)`` after the candidates phase (e.g. an Optuna
            trial reporting an intermediate value); it may raise to stop the run.
    """
    t_start = time.perf_counter()
    run_dir = make_run_dir(config.output_dir, config.run_name, prefix="compile", resume=True)
    handler = _setup_logging(run_dir)
    adapter = dspy.ChatAdapter(use_json_adapter_fallback=config.json_fallback)
    partial: dict[str, Any] = {}
    try:
        with usage.tracking() as tracker, dspy.context(adapter=adapter):
            try:
                return _run(config, run_dir, tracker, teacher_lm, judge_lm, teacher, on_phase, partial, t_start)
            except (TooManyErrors, RunFailed, KeyboardInterrupt) as exc:
                if getattr(exc, "stats", None):
                    partial["candidates"] = exc.stats
                failure = {"run_dir": str(run_dir), "config": asdict(config), "status": "failed",
                           "error": str(exc) or type(exc).__name__, **partial,
                           "lm_usage": tracker.as_dict(), "seconds": round(time.perf_counter() - t_start, 1)}
                write_json(run_dir / "metrics.json", failure)
                write_failure_report(run_dir / "report.md", failure)
                # into log.txt only: the CLI prints the message once, as its last line
                handler.handle(logging.makeLogRecord({"name": __name__, "levelno": logging.ERROR, "levelname": "ERROR",
                                                      "msg": "compile run failed: %s", "args": (failure["error"],)}))
                raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _check_usable(evals: dict[str, dict]) -> None:
    """Raises :class:`RunFailed` when every prediction of every evaluated row failed."""
    rows = [m for m in evals.values() if m.get("n")]
    if rows and all(m.get("errors", 0) >= m["n"] for m in rows):
        counts = ", ".join(f"{k}: {m.get('errors')}/{m.get('n')}" for k, m in evals.items())
        last = next((m["last_error"] for m in reversed(rows) if m.get("last_error")), None)
        raise RunFailed(f"every prediction of the zero-shot and optimized programs failed ({counts}). "
                        f"Last error: {last}")


def _run(config: OptimizeConfig, run_dir: Path, tracker: usage.UsageTracker, teacher_lm: Any, judge_lm: Any,
         teacher: Any, on_phase: Callable[[str, dict], None] | None, partial: dict[str, Any],
         t_start: float) -> dict[str, Any]:
    write_config(run_dir, config)
    taxonomy = OnetTaxonomy.load(config.data_dir)
    splits, train, dev, test = compile_data(config)
    if not train:
        raise ValueError(f"dataset {config.dataset!r} has no training examples.")
    logger.info("data: %d train, %d dev, %d test examples from %s", len(train), len(dev), len(test),
                config.dataset)

    stats = None
    if teacher is not None or config.evidence_teacher or (judge_lm is None and config.judge_lm == "heuristic"):
        stats = getattr(teacher, "stats", None) or training_statistics(splits)
        stats.save(run_dir / "transitions.json")
    teacher = build_teacher(config, taxonomy, stats, teacher)
    lm_for_program = teacher_lm if teacher_lm is not None else lm_spec(
        program_lm_spec(config), role="predictor_lm", api_base=config.api_base, max_tokens=config.max_tokens)
    program = NextOccupation(mode="two_step", lm=lm_for_program, taxonomy=taxonomy)
    judge = build_judge(config, taxonomy, stats, judge_lm, program.predictor_lm)
    tracker.register(program.reasoner_lm, "predictor" if teacher is not None else "teacher")
    if getattr(judge, "lm", None) is not None:
        tracker.register(judge.lm, "judge")
    rule = SelectionRule(thresholds=config.thresholds, min_dpo_gap=config.min_dpo_gap)
    phases: dict[str, float] = {}

    # 1. candidates and oracle reasons
    t0 = time.perf_counter()
    path = run_dir / "candidates.jsonl"
    # finished candidates are reused; failed ones (an error record) are generated again and superseded
    done = {(r["example_id"], r["candidate"]) for r in read_jsonl(path) if not r.get("error")} \
        if path.exists() else set()
    with JsonlWriter(path) as writer:
        try:
            cstats = generate_candidates(train, build_steps(program, judge, config, teacher), writer,
                                         n=config.candidates_per_person, done=done, retries=config.retries,
                                         max_errors=config.max_errors, threads=config.threads)
        finally:
            partial["candidates_written"] = writer.count
    candidates = read_jsonl(path)
    oracles, missing = select_oracles(candidates, rule)
    pairs = dpo_pairs(candidates, rule)
    summary = score_summary(candidates, rule)
    offline = offline_summary(candidates, oracles, summary)
    logger.info("judge histograms %s, grounding pass rate %s, oracle gold-support rate %s",
                offline["judge_histograms"], offline["grounding_pass_rate"], offline["oracle_gold_support_rate"])
    partial.update(candidates=cstats, selection=summary, **offline)
    phases["candidates"] = round(time.perf_counter() - t0, 1)
    pass_rate = "n/a (nothing judged)" if summary["pass_rate"] is None else f"{summary['pass_rate']:.2f}"
    logger.info("phase candidates: %d candidates (%d generated now, %d reused), pass rate %s, %d oracle reasons, "
                "%d without, %d DPO pairs (%.0fs)", summary["candidates"], cstats["generated"], cstats["skipped"],
                pass_rate, len(oracles), len(missing), len(pairs), phases["candidates"])
    if summary["judged"] == 0:
        last = cstats.get("last_error") or next((c.get("error") for c in reversed(candidates) if c.get("error")),
                                                None)
        raise RunFailed(f"no usable candidate: 0 of {summary['candidates']} candidates were generated and judged "
                        f"({summary['generation_errors']} generation errors, {summary['judge_failures']} judge "
                        f"failures). Last error: {last or 'every judge call failed'}")
    if on_phase is not None:
        on_phase("candidates", {"selection": summary, "oracles": len(oracles), "train": len(train)})

    # 2. prompt optimization baseline
    t0 = time.perf_counter()
    metric = JudgeMetric(judge, taxonomy, threshold=config.metric_threshold)
    zero_shot = NextOccupation(mode=config.mode, lm=program.reasoner_lm, predictor_lm=program.predictor_lm,
                               taxonomy=taxonomy)
    program_path = run_dir / "program.json"
    optimizer = build_optimizer(config, metric, teacher_lm=program.reasoner_lm)
    if program_path.exists():
        optimized = NextOccupation(mode=config.mode, lm=program.reasoner_lm, predictor_lm=program.predictor_lm,
                                   taxonomy=taxonomy)
        optimized.load(str(program_path))
        logger.info("phase optimize: reusing %s", program_path)
    else:
        optimized = compile_program(optimizer, zero_shot, _with_oracle_reasons(train, oracles), dev, config)
        optimized.save(str(program_path))
    # nextocc.json beside program.json: NextOccupation.load(run_dir) restores the optimized program
    write_json(run_dir / MANIFEST_FILE, {**optimized.manifest(), "data_dir": _abs_dir(config.data_dir)})
    changes = describe_changes(zero_shot, optimized, config.optimizer)
    if config.optimizer != "none" and not changes["changed"]:
        logger.warning("%s", changes["summary"])
    else:
        logger.info("%s", changes["summary"])
    evals: dict[str, Any] = {}
    for name, prog in (("zero_shot", zero_shot), ("optimized", optimized)):
        for split, exs in (("dev", dev), ("test", test)):
            if not exs:
                continue
            scored, records = score_program(prog, exs, taxonomy, judge=judge if config.eval_judge else None,
                                            threads=config.threads, role="evaluation")
            evals[f"{name}/{split}"] = scored
            with JsonlWriter(run_dir / f"predictions_{name}_{split}.jsonl", mode="w") as out:
                for rec in records:
                    out.write(rec)
    partial["evaluation"] = evals
    phases["optimize"] = round(time.perf_counter() - t0, 1)
    logger.info("phase optimize: %s (%.0fs)", {k: round(v["AccEM"], 1) for k, v in evals.items()},
                phases["optimize"])
    _check_usable(evals)

    # 3. export for TRL
    t0 = time.perf_counter()
    joint = NextOccupation(mode="joint", lm=program.reasoner_lm, taxonomy=taxonomy)
    direct = NextOccupation(mode="direct", lm=program.reasoner_lm, taxonomy=taxonomy)
    steps = {"reason": program.reasoner, "predict": program.predictor, "joint": joint.predictor,
             "direct": direct.predictor}
    counts = export_traces(run_dir, oracles, pairs, steps, joint=config.mode == "joint")
    hybrid = None
    if config.hybrid_baseline:
        hybrid = export_hybrid_traces(run_dir, oracles, train, splits.train, config.hybrid_baseline,
                                      k=config.hybrid_k_candidates, folds=config.hybrid_folds, seed=config.seed,
                                      taxonomy=taxonomy, reasons=config.hybrid_reasons)
        counts.update(hybrid.pop("files"))
    write_data_card(run_dir / "data_card.md", config, summary, counts, len(oracles), len(missing), hybrid)
    phases["export"] = round(time.perf_counter() - t0, 1)

    results = {
        "run_dir": str(run_dir), "config": asdict(config), "status": "ok", "candidates": cstats,
        "selection": summary, **offline, "oracles": len(oracles), "examples_without_oracle": len(missing),
        "dpo_pairs": len(pairs), "exports": counts, "hybrid_export": hybrid, "optimizer_changes": changes,
        "evaluation": evals,
        "lm_usage": tracker.as_dict(), "phases_seconds": phases, "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json(run_dir / "metrics.json", results)
    write_report(run_dir / "report.md", results)
    write_provenance(run_dir, lm_usage=results["lm_usage"])
    logger.info("compile run finished in %.0fs: %s", results["seconds"], run_dir)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""

    def report(results: dict[str, Any]) -> int:
        print(Path(results["run_dir"], "report.md").read_text(encoding="utf-8"))
        totals = {k: sum(u[k] for u in results["lm_usage"].values()) for k in ("requests", "retries", "errors")}
        if totals["errors"] or totals["retries"]:
            print(f"warning: {totals['errors']} LM calls failed and {totals['retries']} were retried "
                  "(see lm_usage in report.md).", file=sys.stderr)
        return 0

    def on_error(exc: BaseException) -> int:
        if isinstance(exc, KeyboardInterrupt):
            print_error("interrupted; finished candidates are kept and a re-run resumes.")
            return 130
        print_error(one_line(str(exc), 2000))
        return 1

    return run_cli(lambda: load_config(OptimizeConfig, argv, description=__doc__.split("\n\n")[0]), run_optimize,
                   report, errors=(TooManyErrors, RunFailed, ValueError, FileNotFoundError, KeyboardInterrupt),
                   on_error=on_error)


if __name__ == "__main__":
    sys.exit(main())
