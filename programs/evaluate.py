"""Evaluates a baseline or an LM program on a dataset split: ``python -m programs.evaluate``.

Example::

    python -m programs.evaluate --dataset nlsy79 --program markov --split dev --data_dir ../shared/data
    python -m programs.evaluate --dataset nlsy79 --program two_step --lm local:gemma-3-270m --max_examples 50
    python -m programs.evaluate --program joint --lm openai/gpt-4.1-mini --judge_lm openai/gpt-4.1-mini
    python -m programs.evaluate --config configs/eval.yaml --k 10
    python -m programs.evaluate --dataset nlsy79 --program sequence --baseline_options "{hidden_size: 128, epochs: 20}"

Baselines (frequency, markov, return_markov, and the GRU ``sequence`` model) are fitted on the train split; LM
programs (two_step, joint, direct, hybrid) run with ``--lm`` (any spec :mod:`lms` resolves; hybrid also fits its baseline on train) and,
with ``--judge_lm``, their reasons are judged. Scores come from :mod:`metrics.accuracy`. Each invocation writes
a run directory (:mod:`runkit.run_dir`) holding ``config.yaml`` (the resolved configuration),
``metrics.json`` (the results dict), ``predictions.jsonl`` (one record per example: reason, prediction,
ranking, scores, verdict) and, for baselines, ``model.json`` (plus ``model.safetensors`` for ``sequence``).
:func:`run_evaluation` is the importable entry point; :func:`main` is a thin command-line wrapper that also prints
the results table.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from careers.datasets import load_splits
from careers.onet import OnetTaxonomy
from careers.splits import sample_per_person
from lms import usage
from lms.model_store import DEFAULT_SPEC
from lms.resolve import lm_spec
from metrics.accuracy import evaluate_predictions
from metrics.judge import ReasonJudge
from programs.baseline_registry import BASELINE_INPUTS, BASELINE_KINDS, make_baseline
from programs.factory import build_program
from programs.scoring import score_program
from runkit.cli import RUN_ERRORS, print_error, run_cli
from runkit.config import load_config
from runkit.files import JsonlWriter, read_jsonl, redact, write_config, write_json
from runkit.provenance import write_provenance
from runkit.run_dir import RunFailed, make_run_dir

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
LM_PROGRAMS = ("two_step", "joint", "direct", "hybrid")
PROGRAMS = BASELINE_KINDS + LM_PROGRAMS
HYBRID_OPTIONS = {"mode", "answer_set", "k_candidates", "baseline", "baseline_kwargs"}
TABLE_COLUMNS = ("AccEM", "AccRM", "Acc@{k}", "MRR", "soc_major", "n")


@dataclass
class EvalConfig:
    """Evaluate a next-occupation baseline or LM program on a dataset split."""

    dataset: str = field(default="synthetic", metadata={"help": "Dataset spec: nlsy79, synthetic or jsonl:PATH."})
    program: str = field(default="markov", metadata={"help": f"Program to evaluate: {', '.join(PROGRAMS)}."})
    lm: str | dict[str, Any] = field(default=DEFAULT_SPEC, metadata={
        "help": "LM of LM programs: a spec string (local:gemma-3-270m, local:/path[+adapter], a litellm model) or a "
                "mapping {model, api_base, api_key_env, max_tokens, temperature, num_retries}."})
    predictor_lm: str | dict[str, Any] | None = field(default=None, metadata={
        "help": "Separate LM (string or mapping) for the occupation step (two-model mode); default: --lm."})
    judge_lm: str | dict[str, Any] | None = field(default=None, metadata={
        "help": "LM (string or mapping) of the reason judge; when set, mean judge scores are reported. Default: none."})
    api_base: str | None = field(default=None, metadata={
        "help": "Default API base URL of remote string specs (a mapping's own api_base wins)."})
    top1: str = field(default="answer", metadata={
        "help": "LM programs: 'answer' (the normalized generated title) or 'ranked' (best constrained-ranking title)."})
    threads: int = field(default=4, metadata={"help": "Worker threads for LM programs (local LMs batch them)."})
    split: str = field(default="dev", metadata={"help": "Split to evaluate on: train, dev or test."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Data directory with onet/, soc/, nlsy79/ (default: $NEXTOCC_DATA_DIR or the user cache)."})
    seed: int = field(default=0, metadata={"help": "Seed of the person-level split (and of synthetic data)."})
    synthetic_persons: int | None = field(default=None, metadata={
        "help": "Persons generated for --dataset synthetic (default: the generator's); the same number as a compile "
                "run's synthetic_persons evaluates on that run's world and split."})
    motives: bool = field(default=False, metadata={
        "help": "--dataset synthetic only: the latent-motive world (careers.motives), as compile's motives: true."})
    output_dir: str = field(default="runs", metadata={"help": "Parent folder of the run directories."})
    run_name: str | None = field(default=None, metadata={
        "help": "Name of this run's directory (default: <program>-<dataset>-<timestamp>)."})
    k: int = field(default=5, metadata={"help": "Length of the ranked predictions; Acc@k is reported for it."})
    alpha: float = field(default=0.1, metadata={"help": "Add-alpha smoothing pseudo-count of the baselines."})
    lam: float | None = field(default=None, metadata={
        "help": "Return weight of return_markov in [0, 1]; default: the train rate of returns."})
    baseline_options: str | dict[str, Any] | None = field(default=None, metadata={
        "help": "Options of the sequence baseline as a YAML mapping, e.g. '{hidden_size: 128, epochs: 20, lr: 0.003, "
                "dropout: 0.2, max_minutes: 10, cache_dir: runs/cache}' (see programs.sequence_model.SequenceConfig)."})
    hybrid_options: str | dict[str, Any] | None = field(default=None, metadata={
        "help": "Options of the hybrid program as a YAML mapping, e.g. '{mode: joint, answer_set: candidates, "
                "k_candidates: 5, baseline: return_markov}' (see programs.hybrid.HybridNextOccupation; mode defaults "
                "to two_step)."})
    max_examples: int | None = field(default=None, metadata={
        "help": "Evaluate a seeded sample of N persons (one transition each) of the split; default all examples."})
    json_fallback: bool = field(default=False, metadata={
        "help": "Let DSPy's ChatAdapter retry an unparseable reply with the JSONAdapter (off: the ChatAdapter's own "
                "parse error is recorded)."})
    log_level: str = field(default="INFO", metadata={"help": "Logging level: DEBUG, INFO, WARNING or ERROR."})

    def __post_init__(self):
        for role in ("lm", "predictor_lm", "judge_lm"):
            setattr(self, role, lm_spec(getattr(self, role), role=role))
        if self.program not in PROGRAMS:
            raise ValueError(f"program must be one of {list(PROGRAMS)}, got {self.program!r}.")
        if self.top1 not in ("answer", "ranked"):
            raise ValueError(f"top1 must be 'answer' or 'ranked', got {self.top1!r}.")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}.")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {self.split!r}.")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}.")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}.")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be positive, got {self.max_examples}.")
        if not self.dataset:
            raise ValueError("dataset must not be empty (nlsy79, synthetic or jsonl:PATH).")
        if (self.synthetic_persons is not None or self.motives) and self.dataset != "synthetic":
            raise ValueError(f"synthetic_persons and motives apply to --dataset synthetic only, not {self.dataset!r}.")
        if self.synthetic_persons is not None and self.synthetic_persons < 10:
            raise ValueError(f"synthetic_persons must be >= 10, got {self.synthetic_persons}.")
        self.baseline_options = _yaml_mapping("baseline_options", self.baseline_options,
                                              "'{hidden_size: 128, epochs: 20}'")
        self.hybrid_options = _yaml_mapping("hybrid_options", self.hybrid_options,
                                            "'{mode: joint, answer_set: candidates}'")
        if self.hybrid_options and self.program != "hybrid":
            raise ValueError(f"hybrid_options apply to --program hybrid only, not {self.program!r}.")
        unknown = set(self.hybrid_options or {}) - HYBRID_OPTIONS
        if unknown:
            raise ValueError(f"hybrid_options has unknown keys {sorted(unknown)}; use {sorted(HYBRID_OPTIONS)}.")
        if self.baseline_options and self.program != "sequence":
            raise ValueError(f"baseline_options apply to --program sequence only, not {self.program!r}.")


def _yaml_mapping(name: str, value: Any, example: str) -> dict[str, Any] | None:
    """A flag's YAML mapping (a string from the command line, or a mapping from a config file)."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{name} is not a YAML mapping ({exc}).") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping such as {example}, got {value!r}.")
    return value


def _load_splits(config: EvalConfig) -> Any:
    return load_splits(config.dataset, config.data_dir, config.seed, synthetic_persons=config.synthetic_persons,
                       motives=config.motives)


def _prediction_record(example: Any, pred: Any, row: dict[str, Any]) -> dict[str, Any]:
    scores = {k: v for k, v in row.items() if k not in ("gold_codes", "pred_code", "matched")}
    return {
        "person_id": example.get("person_id"),
        "states": list(example.get("states") or []),
        "gold_occupation": example.get("occupation"),
        "gold_codes": row["gold_codes"],
        "gold_state": example.get("gold_state"),
        "occupation": pred.get("occupation"),
        "onet_code": pred.get("onet_code"),
        "state": pred.get("state"),
        "matched": row["matched"],
        "ranked": [list(r) for r in pred.get("ranked") or []],
        "scores": scores,
    }


def run_evaluation(config: EvalConfig, *, splits: Any = None, taxonomy: OnetTaxonomy | None = None,
                   lm: Any = None, judge_lm: Any = None) -> dict[str, Any]:
    """Fits the configured baseline on train, evaluates it on the split and writes the run directory.

    Args:
        config: The evaluation config.
        splits: Preloaded splits (an object with ``train``/``dev``/``test`` lists of examples, such as
            :class:`careers.splits.DatasetSplits`); None loads ``config.dataset`` with
            ``careers.datasets.load_dataset``.
        taxonomy: A loaded taxonomy; None loads it from ``config.data_dir``.
        lm: A ready ``dspy.LM`` for LM programs instead of ``config.lm`` (tests, notebooks).
        judge_lm: A ready ``dspy.LM`` for the judge instead of ``config.judge_lm``.

    Returns:
        ``{"dataset", "program", "split", "k", "metrics", "n_train", "dataset_stats", "model", "seconds",
        "run_dir"}``; ``metrics`` is :func:`metrics.accuracy.evaluate_predictions` (Acc@1 and Acc@k, without
        the per-example rows, which go to ``predictions.jsonl``) plus ``state_acc``, the percentage of
        predicted state keys equal to the gold state (NLSY79: the 1980 Census category).

    Raises:
        ValueError: When the train split has no examples.
    """
    t0 = time.perf_counter()
    run_dir = make_run_dir(config.output_dir, config.run_name,
                           prefix=f"{config.program}-{config.dataset.split(':')[0]}")
    write_config(run_dir, config)
    taxonomy = taxonomy or OnetTaxonomy.load(config.data_dir)
    if splits is None:
        splits = _load_splits(config)
    train, evalset = list(splits.train), list(getattr(splits, config.split))
    if not train:
        raise ValueError(f"Dataset {config.dataset!r} has no training examples to fit {config.program!r} on.")
    if config.max_examples:
        evalset = sample_per_person(evalset, config.max_examples, config.seed)
    if config.program in LM_PROGRAMS:
        return _run_lm_evaluation(config, run_dir, train, evalset, taxonomy, splits, t0, lm, judge_lm)
    kwargs: dict[str, Any] = {"k": config.k, "alpha": config.alpha, "taxonomy": taxonomy}
    if config.program == "return_markov":
        kwargs["lam"] = config.lam
    if config.program == "sequence":
        kwargs.update(seed=config.seed, **(config.baseline_options or {}))
    model = make_baseline(config.program, **kwargs).fit(train)
    model.save(run_dir / "model.json")
    logger.info("Fitted %s on %d train examples; evaluating %d %s examples", config.program, len(train),
                len(evalset), config.split)

    preds = [model(history=ex.get("history"), states=ex.get("states"), career=ex.get("career")) for ex in evalset]
    scored = evaluate_predictions(evalset, preds, taxonomy, ks=tuple(sorted({1, config.k})))
    rows = scored.pop("per_example")
    scored["ranking_methods"] = {"baseline_probability": sum(1 for p in preds if p.get("ranked"))}
    # state-level accuracy (e.g. the 1980 Census category for NLSY79): the baselines' own label space
    with_state = [(ex.get("gold_state"), pred.get("state")) for ex, pred in zip(evalset, preds, strict=True)
                  if ex.get("gold_state")]
    if with_state:
        scored["state_acc"] = 100 * sum(g == p for g, p in with_state) / len(with_state)
    with JsonlWriter(run_dir / "predictions.jsonl") as out:
        for ex, pred, row in zip(evalset, preds, rows, strict=True):
            out.write(_prediction_record(ex, pred, row))

    results: dict[str, Any] = {
        "dataset": config.dataset,
        "program": config.program,
        "split": config.split,
        "k": config.k,
        "metrics": scored,
        "n_train": len(train),
        "dataset_stats": dict(getattr(splits, "stats", {}) or {}),
        "model": {"lam": getattr(model, "lam", None), "exclude_current": model.exclude_current,
                  **({"training": model.train_summary} if config.program == "sequence" else {})},
        "seconds": round(time.perf_counter() - t0, 2),
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "metrics.json", results)
    logger.info("Wrote %s", run_dir)
    return results


def _run_lm_evaluation(config: EvalConfig, run_dir: Path, train: list, evalset: list, taxonomy: OnetTaxonomy,
                       splits: Any, t0: float, lm: Any = None, judge_lm: Any = None) -> dict[str, Any]:
    """Scores an LM program (optionally judged) and writes metrics.json and predictions.jsonl.

    Raises:
        RunFailed: After writing the run directory, when every prediction (or every judge call) failed.
    """
    import dspy

    with usage.tracking() as tracker, dspy.context(adapter=dspy.ChatAdapter(
            use_json_adapter_fallback=config.json_fallback)):
        results = _score_lm_program(config, run_dir, train, evalset, taxonomy, splits, t0, lm, judge_lm, tracker)
    write_provenance(run_dir, lm_usage=results["lm_usage"])  # with the LM heads the loaded models used
    m = results["metrics"]
    problem = None
    if m.get("n") and m.get("errors", 0) >= m["n"]:
        problem = f"all {m['n']} predictions failed. Last error: {m.get('last_error')}"
    elif m.get("judge_n") and m.get("judge_errors", 0) >= m["judge_n"]:
        judge_usage = results["lm_usage"].get("judge") or {}
        problem = (f"all {m['judge_n']} judge calls failed. Last error: "
                   f"{judge_usage.get('last_error') or 'no valid score in any reply'}")
    if problem:
        exc = RunFailed(f"{config.program} on {config.dataset}/{config.split}: {problem} (run directory {run_dir})")
        exc.results = results
        raise exc
    return results


def _score_lm_program(config: EvalConfig, run_dir: Path, train: list, evalset: list, taxonomy: OnetTaxonomy,
                      splits: Any, t0: float, lm: Any, judge_lm: Any, tracker: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"k": config.k, "top1": config.top1, **(config.hybrid_options or {})}
    if config.predictor_lm:
        kwargs["predictor_lm"] = lm_spec(config.predictor_lm, role="predictor_lm", api_base=config.api_base)
    program = build_program(config.program, lm=lm or lm_spec(config.lm, api_base=config.api_base),
                            taxonomy=taxonomy, trainset=train if config.program == "hybrid" else None, **kwargs)
    judge_spec = judge_lm or lm_spec(config.judge_lm, role="judge_lm", api_base=config.api_base)
    judge = ReasonJudge(judge_spec) if judge_spec is not None and config.program != "direct" else None
    if judge is not None:
        tracker.register(judge.lm, "judge")
    inputs = BASELINE_INPUTS if config.program == "hybrid" else None
    logger.info("Evaluating %s (%s) on %d %s examples", config.program, config.lm, len(evalset), config.split)
    scored, records = score_program(program, evalset, taxonomy, judge=judge, threads=config.threads,
                                    ks=tuple(sorted({1, config.k})), inputs=inputs)
    with JsonlWriter(run_dir / "predictions.jsonl", mode="w") as out:
        for rec in records:
            out.write(rec)
    results: dict[str, Any] = {
        "dataset": config.dataset, "program": config.program, "split": config.split, "k": config.k,
        "lm": config.lm, "predictor_lm": config.predictor_lm, "judge_lm": config.judge_lm, "metrics": scored,
        "n_train": len(train), "dataset_stats": dict(getattr(splits, "stats", {}) or {}),
        "lm_usage": tracker.as_dict(), "seconds": round(time.perf_counter() - t0, 2), "run_dir": str(run_dir),
    }
    write_json(run_dir / "metrics.json", results)
    return results


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The results dict (``metrics.json``) and per-example records (``predictions.jsonl``) of an evaluate run.

    Raises:
        FileNotFoundError: When the directory lacks either file.
        ValueError: For a record without ``person_id``, ``gold_occupation`` or a ``scores`` mapping, naming the record.
    """
    run_dir = Path(run_dir)
    for name in ("metrics.json", "predictions.jsonl"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} does not exist; pass a run directory of python -m "
                                    "programs.evaluate (it writes metrics.json and predictions.jsonl).")
    results = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    records = read_jsonl(run_dir / "predictions.jsonl")
    for i, rec in enumerate(records, 1):
        missing = [k for k in ("person_id", "gold_occupation", "scores") if not isinstance(rec, dict) or k not in rec]
        if missing or not isinstance(rec["scores"], dict):
            problem = f"missing {missing}" if missing else "'scores' is not a mapping"
            raise ValueError(f"{run_dir / 'predictions.jsonl'}, record {i}: {problem}; is it a programs.evaluate run?")
    return results, records


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """A plain-text table (one row per results dict): AccEM, AccRM, Acc@k, MRR, SOC-major accuracy, n, and an
    ``errors`` column (failed predictions; ``judge_errors`` and ``lm_errors`` too) whenever any call failed."""
    rows = []
    show_errors = any(_error_counts(res) for res in results)
    for res in results:
        m, k = res["metrics"], res.get("k", 5)
        rows.append({
            "dataset": res["dataset"], "program": res["program"], "split": res["split"],
            "AccEM": round(m["AccEM"], 2), "AccRM": round(m["AccRM"], 2), f"Acc@{k}": round(m[f"Acc@{k}"], 2),
            "MRR": round(m["MRR"], 4), "SOC-major": round(m["soc_major"], 2), "n": m["n"],
            **{c: m[f"judge_{c}"] for c in ("factuality", "coherence", "utility") if m.get(f"judge_{c}") is not None},
        })
        if show_errors:
            rows[-1].update(_error_counts(res) or {"errors": 0})
    return pd.DataFrame(rows).to_string(index=False)


def _error_counts(res: dict[str, Any]) -> dict[str, int]:
    """Failed predictions, judge verdicts and LM calls of one results dict (only the non-zero ones, errors first)."""
    m = res["metrics"]
    lm_errors = sum(u.get("errors", 0) for u in (res.get("lm_usage") or {}).values())
    retries = sum(u.get("retries", 0) for u in (res.get("lm_usage") or {}).values())
    counts = {"errors": m.get("errors", 0) or 0, "judge_errors": m.get("judge_errors", 0) or 0,
              "lm_errors": lm_errors, "lm_retries": retries}
    if not any(counts.values()):
        return {}
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: parses the config, runs the evaluation, prints the table."""

    def run(config: EvalConfig) -> dict[str, Any]:
        logger.info("Config: %s", redact(asdict(config)))
        return run_evaluation(config)

    def report(results: dict[str, Any]) -> int:
        print(results_table([results]))
        print(f"run directory: {Path(results['run_dir'])}")
        return 0

    def on_error(exc: BaseException) -> int | None:
        if isinstance(exc, RunFailed):  # the run directory is written; the table shows the errors
            print(results_table([exc.results]))
            print_error(" ".join(str(exc).split()))
            return 1
        return None

    return run_cli(lambda: load_config(EvalConfig, argv, description=EvalConfig.__doc__), run, report,
                   errors=(RunFailed, *RUN_ERRORS), on_error=on_error)


if __name__ == "__main__":
    sys.exit(main())
