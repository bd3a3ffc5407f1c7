"""The paper-claims experiment: ``python -m experiments.paper_claims --config configs/claims_<size>.yaml``.

For each dataset it scores every model of Table A on the SAME seeded per-person sample of the test split
(:func:`careers.splits.sample_per_person`), so that every comparison is paired:

* supervised baselines (frequency, Markov, return-aware Markov: seconds; the GRU sequence model of
  :mod:`programs.sequence_model`: minutes, options in ``baseline_options``), fitted on the train split here;
* zero-shot LM programs (two-step, direct) on ``lm``;
* the optimized prompt of a compile run (``compile_run``: its ``program.json``; its prediction files are reused for
  the examples they cover when they were made with the same LM);
* distilled students of distill runs (``distill_*_run``: ``metrics.json`` ``students``/``mode``, or the adapters on
  disk); a row whose run directory is absent is reported as "not run" with the command that produces it -- nothing
  is ever trained here;
* the hybrid program (return-aware Markov candidates + LM) and the distilled hybrid student (``distill_hybrid_run``);
* on synthetic data the Bayes-optimal predictor (argmax of each example's exact ``next_distribution``).

Per-example predictions are written to ``predictions_<dataset>_<row>.jsonl`` in the output run directory and reused on
a re-run with the same ``run_name`` (``resume``); the metrics are always recomputed from the prediction records with
:func:`metrics.accuracy.score_example`. Outputs: ``claims.md`` (Table A with person-level bootstrap CIs at
``1 - alpha``, one sentence per claim, the reason-quality tables), ``claims.json`` (the results dict of
:func:`run_claims`), ``accuracy_<dataset>.png``, ``quality_<dataset>.png``, ``config.yaml``.

Claims: (a) distilled vs zero-shot / best supervised / optimized prompt, (b) joint vs two-model student, (h) the
hybrid student vs both its parents, (s) on synthetic data the joint student vs 80% of the Bayes ceiling -- paired
bootstrap CIs of the difference; (c) accuracy by reason-quality bucket and its Spearman / point-biserial
correlation, from the compile run's judged ``candidates.jsonl`` and from judged predictions (``judge_lm``; ``heuristic``
is the LM-free judge with the dataset's training statistics); (c2) on the latent-motive world, accuracy when a row's
reason names the true motive vs not (:mod:`experiments.motives`).

The rows are built in :mod:`experiments.rows` (compile and distill runs are read with their producers' readers,
:mod:`compile.run_reader` and :mod:`finetune.run_reader`), the claims in :mod:`experiments.claims`, the tables and
``claims.md`` in :mod:`experiments.tables`, claim (c) in :mod:`experiments.quality`.

Tests and notebooks inject ready LMs (``lm=``, ``judge_lm=``), per-row programs (``programs={"distilled_joint":
callable}``), splits and the taxonomy into :func:`run_claims`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy
import yaml

from careers.datasets import load_splits
from careers.onet import OnetTaxonomy
from careers.splits import sample_per_person
from careers.transitions import TransitionStats
from experiments.claims import build_claims, unusable_lm_rows
from experiments.motives import motive_breakdown, motive_claim
from experiments.quality import QualityData, quality_buckets, quality_from_candidates, quality_from_records
from experiments.rows import ALL_ROWS, ROW_SPECS, SUPERVISED, RowContext, build_row
from experiments.tables import (
    RowScores,
    accuracy_table,
    jsonable,
    metric_names,
    render_markdown,
)
from lms import usage
from lms.model_store import DEFAULT_SPEC
from lms.resolve import lm_spec
from metrics.heuristic_judge import HeuristicJudge
from metrics.judge import ReasonJudge
from programs.hybrid import ANSWER_SETS
from runkit.cli import RUN_ERRORS, print_error, run_cli
from runkit.config import load_config
from runkit.files import write_config, write_json
from runkit.provenance import write_provenance
from runkit.run_dir import RunFailed, make_run_dir

logger = logging.getLogger(__name__)

HEURISTIC = "heuristic"
# claims (c) and (c2) read the students' reasons first (the first source with data decides the claim)
STUDENT_ROWS = ("distilled_joint", "distilled_hybrid", "distilled_two_model")


@dataclass
class ClaimsConfig:
    """Paper claims: Table A with bootstrap CIs, paired claims (a)-(b), reason quality vs accuracy (c)."""

    datasets: list[str] = field(default_factory=lambda: ["synthetic"], metadata={
        "help": "Datasets to run: synthetic and/or nlsy79 (any careers.datasets spec)."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Data directory with onet/, soc/, nlsy79/ (default: $NEXTOCC_DATA_DIR or the user cache)."})
    synthetic_persons: int = field(default=400, metadata={
        "help": "Persons generated for the synthetic dataset (use the compile run's synthetic_persons to share its "
                "test split)."})
    motives: bool = field(default=False, metadata={
        "help": "Synthetic dataset only: the latent-motive world (careers.motives), as the compile run's motives."})
    n_test: int = field(default=40, metadata={
        "help": "Test persons: a seeded per-person sample (one transition each) of the test split, shared by all rows."})
    seed: int = field(default=0, metadata={"help": "Seed of the dataset split, the test sample and the bootstrap."})
    lm: str | dict[str, Any] | None = field(default=DEFAULT_SPEC, metadata={
        "help": "LM of the zero-shot, optimized and hybrid rows: a spec string (local:gemma-3-270m, a litellm model) "
                "or a mapping {model, api_base, api_key_env, max_tokens, temperature, num_retries}; null skips those "
                "rows (reported as not run)."})
    judge_lm: str | dict[str, Any] | None = field(default=None, metadata={
        "help": "LM of the reason judge for LM rows run here (string or mapping like lm; claim (c) from judged "
                "predictions); 'heuristic': the LM-free HeuristicJudge with each dataset's training statistics; null: "
                "no judge (claim (c) then uses the compile run's judged candidates only)."})
    api_base: str | None = field(default=None, metadata={
        "help": "Default API base URL of remote string specs (a mapping's own api_base wins)."})
    threads: int = field(default=4, metadata={"help": "Worker threads for LM rows (local LMs batch concurrent calls)."})
    k: int = field(default=5, metadata={"help": "Ranking cut-off: Acc@k and the length of the ranked predictions."})
    top1: str = field(default="answer", metadata={
        "help": "LM programs' top-1: 'answer' (the normalized generated title) or 'ranked'."})
    rows: list[str] = field(default_factory=lambda: list(ALL_ROWS), metadata={
        "help": f"Rows of Table A to produce, from: {', '.join(ALL_ROWS)} (bayes_optimal only on synthetic data)."})
    baseline_options: str | dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Options of the supervised rows' baselines by row name (YAML mapping; YAML flow text as a flag), e.g. "
                "'{sequence: {max_minutes: 10, epochs: 30}}' (programs.sequence_model.SequenceConfig fields; the "
                "sequence seed defaults to seed)."})
    compile_run: str | None = field(default="runs/compile/demo", metadata={
        "help": "Compile run directory to reuse (program.json, predictions_*.jsonl, candidates.jsonl); '{dataset}' is "
                "replaced by the dataset name. Never re-created here."})
    distill_joint_run: str | None = field(default="runs/distill/demo_joint", metadata={
        "help": "Distill run directory (mode joint) for the distilled joint row; '{dataset}' is replaced."})
    distill_two_model_run: str | None = field(default="runs/distill/demo_two_model", metadata={
        "help": "Distill run directory (mode two_model) for the distilled two-model row; '{dataset}' is replaced."})
    distill_direct_run: str | None = field(default=None, metadata={
        "help": "Run directory of a student trained without reasons (direct prompts) for the distilled direct row."})
    distill_hybrid_run: str | None = field(default=None, metadata={
        "help": "Distill run directory (mode hybrid: the student inside the hybrid program, with the compile run's "
                "baseline candidates) for the distilled hybrid row; '{dataset}' is replaced."})
    hybrid_answer_set: str = field(default="titles", metadata={
        "help": "Answers of both hybrid rows: 'titles' (any official title) or 'candidates' (one of the baseline's "
                "candidates, ordered by the LM; programs.hybrid.HybridNextOccupation answer_set)."})
    student_program_state: bool = field(default=False, metadata={
        "help": "Load the compile run's program.json (demos/instructions) into the students' programs, as "
                "finetune.evaluate_student does; default: the students run zero-shot prompts."})
    primary_metric: str = field(default="AccEM", metadata={
        "help": "Metric of the claim sentences and of the choice of the best supervised baseline (AccEM, AccRM, "
                "Acc@k, MRR, soc_major); claims.json has every metric."})
    output_dir: str = field(default="runs/claims", metadata={"help": "Parent folder of the claims run directories."})
    run_name: str | None = field(default=None, metadata={
        "help": "Run directory name (default: claims-<timestamp>); re-using it with resume reuses its predictions."})
    resume: bool = field(default=True, metadata={
        "help": "With run_name: reuse predictions_<dataset>_<row>.jsonl already in the run directory (a distilled "
                "row's only while its adapter files are unchanged)."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap replicates of every CI."})
    alpha: float = field(default=0.05, metadata={"help": "1 - confidence level of the CIs (0.05 gives 95 percent CIs)."})
    log_level: str = field(default="INFO", metadata={"help": "Logging level: DEBUG, INFO, WARNING or ERROR."})

    def __post_init__(self):
        self.lm = lm_spec(self.lm, role="lm")
        self.judge_lm = lm_spec(self.judge_lm, role="judge_lm")
        if not self.datasets:
            raise ValueError("datasets must name at least one dataset (synthetic, nlsy79).")
        unknown = [r for r in self.rows if r not in ROW_SPECS]
        if unknown:
            raise ValueError(f"unknown rows {unknown}; choose from {list(ALL_ROWS)}.")
        if isinstance(self.baseline_options, str):
            try:
                self.baseline_options = yaml.safe_load(self.baseline_options) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"baseline_options is not a YAML mapping ({exc}).") from None
        if not isinstance(self.baseline_options, Mapping):
            raise ValueError("baseline_options must be a mapping such as '{sequence: {epochs: 20}}', got "
                             f"{self.baseline_options!r}.")
        bad = [name for name in self.baseline_options if name not in SUPERVISED]
        if bad:
            raise ValueError(f"baseline_options names {bad}; only the supervised rows {list(SUPERVISED)} take options.")
        for name, options in self.baseline_options.items():
            if not isinstance(options, Mapping):
                raise ValueError(f"baseline_options.{name} must be a mapping of options, got {options!r}.")
        if self.n_test < 1:
            raise ValueError(f"n_test must be >= 1, got {self.n_test}.")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}.")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}.")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100, got {self.n_boot}.")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}.")
        if self.top1 not in ("answer", "ranked"):
            raise ValueError(f"top1 must be 'answer' or 'ranked', got {self.top1!r}.")
        if self.hybrid_answer_set not in ANSWER_SETS:
            raise ValueError(f"hybrid_answer_set must be one of {ANSWER_SETS}, got {self.hybrid_answer_set!r}.")
        if self.primary_metric not in metric_names(self.k):
            raise ValueError(f"primary_metric must be one of {list(metric_names(self.k))}, got {self.primary_metric!r}.")


def split_warnings(compile_cfg: Mapping[str, Any], config: ClaimsConfig, dataset: str) -> list[str]:
    """Differences between the compile run's data settings and ours that could put students' training persons into
    our test sample (the split is a seeded hash of the person id) or change the synthetic population."""
    out = []
    if "seed" in compile_cfg and compile_cfg.get("seed") != config.seed:
        out.append(f"compile run seed {compile_cfg.get('seed')} != claims seed {config.seed}: the person split differs,"
                   " so distilled/optimized rows may be tested on their own training persons")
    if (dataset == "synthetic" and compile_cfg.get("synthetic_persons") is not None
            and compile_cfg.get("synthetic_persons") != config.synthetic_persons):
        out.append(f"compile run synthetic_persons {compile_cfg.get('synthetic_persons')} != "
                   f"{config.synthetic_persons}")
    if dataset == "synthetic" and "motives" in compile_cfg and bool(compile_cfg.get("motives")) != config.motives:
        out.append(f"compile run motives {compile_cfg.get('motives')} != claims motives {config.motives}: the "
                   "students were trained on another synthetic world")
    return out


def _splits_for(dataset: str, splits: Any, config: ClaimsConfig, taxonomy: Any) -> Any:
    if splits is not None:
        if isinstance(splits, Mapping):
            if dataset in splits:
                return splits[dataset]
        else:
            return splits
    motives = config.motives and dataset == "synthetic"
    return load_splits(dataset, config.data_dir, config.seed, synthetic_persons=config.synthetic_persons,
                       motives=motives, taxonomy=taxonomy)


def _quality_sources(ctx: RowContext, rows: Mapping[str, RowScores], config: ClaimsConfig) -> list[QualityData]:
    """Claim (c) data: the compile run's judged candidates, then the judged reasons of the students
    (:data:`STUDENT_ROWS`), then of the other rows in table order."""
    sources = []
    if ctx.compile.available:
        cands = ctx.compile.candidates()
        data = quality_from_candidates(cands, source=f"compile candidates ({ctx.compile.path.name})") if cands else None
        if data is not None and data.n:  # candidates without predictor calls have no outcome to correlate with
            sources.append(data)
    order = {name: i for i, name in enumerate(STUDENT_ROWS)}
    for name, records in sorted(ctx.records.items(), key=lambda item: order.get(item[0], len(order))):
        row = rows.get(name)
        if row is None or not row.ok:
            continue
        data = quality_from_records(records, row.scores[config.primary_metric], row.groups,
                                    source=f"{row.label} predictions")
        if data.n:
            sources.append(data)
    return sources


def _motive_breakdowns(ctx: RowContext, rows: Mapping[str, RowScores], config: ClaimsConfig
                       ) -> list[dict[str, Any]] | None:
    """Claim (c2) data: per row with reasons, accuracy when the reason names the true motive vs not (None when the
    test examples carry no motive)."""
    if not ctx.test or any(not ex.get("motive") for ex in ctx.test):
        return None
    out = []
    for name, records in ctx.records.items():
        row = rows.get(name)
        if row is None or not row.ok:
            continue
        part = motive_breakdown(ctx.test, records, row.scores[config.primary_metric], row.groups, row.label,
                                n_boot=config.n_boot, alpha=config.alpha, seed=config.seed)
        if part is not None:
            out.append(part)
    return out


def run_dataset(config: ClaimsConfig, dataset: str, run_dir: Path, taxonomy: Any, *, splits: Any = None,
                lm: Any = None, judge: Any = None, programs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Table A, claims and reason quality for one dataset (see the module docstring)."""
    from experiments.plots import plot_accuracy, plot_quality  # deferred: matplotlib

    t0 = time.perf_counter()
    data = _splits_for(dataset, splits, config, taxonomy)
    test = sample_per_person(list(data.test), config.n_test, config.seed)
    if not test:
        raise ValueError(f"dataset {dataset!r} has no test examples.")
    if judge == HEURISTIC:  # LM-free, with this dataset's training statistics
        judge = HeuristicJudge(taxonomy, TransitionStats.fit(data.train))
    ctx = RowContext(config, dataset, run_dir, taxonomy, data, test, lm, judge, programs or {})
    warnings: list[str] = []
    if not ctx.compile.available:
        logger.warning("[%s] compile run not used: %s", dataset, ctx.compile.reason)
    else:
        warnings = split_warnings(ctx.compile.config, config, dataset)
        for w in warnings:
            logger.warning("[%s] %s", dataset, w)
    rows: dict[str, RowScores] = {}
    for name in ALL_ROWS:
        if name not in config.rows or (name == "bayes_optimal" and dataset != "synthetic"
                                       and not any(ex.get("next_distribution") for ex in test)):
            continue
        t_row = time.perf_counter()
        rows[name] = build_row(ctx, name)
        logger.info("[%s] row %s: %s (%.1fs)", dataset, name, rows[name].status, time.perf_counter() - t_row)
    table = accuracy_table(list(rows.values()), config.k, n_boot=config.n_boot, alpha=config.alpha, seed=config.seed)
    quality = [quality_buckets(q, n_boot=config.n_boot, alpha=config.alpha, seed=config.seed)
               for q in _quality_sources(ctx, rows, config)]
    claims = build_claims(rows, config, quality)
    motives = _motive_breakdowns(ctx, rows, config)
    if motives is not None:
        claims.append(motive_claim(motives, preferred=[rows[n].label for n in STUDENT_ROWS if n in rows]))
    ds = dataset.split(":")[0]
    plots = {"accuracy": plot_accuracy(table, run_dir / f"accuracy_{ds}.png", config.primary_metric,
                                       title=f"{dataset}: {config.primary_metric} by model (n={len(test)})",
                                       level=1 - config.alpha).name}
    if quality:
        plots["quality"] = plot_quality(quality, run_dir / f"quality_{ds}.png",
                                        title=f"{dataset}: accuracy by reason quality").name
    bayes = None
    if all(ex.get("next_distribution") for ex in test):
        bayes = sum(max(ex.get("next_distribution").values()) for ex in test) / len(test)
    test_result = {r["name"]: ({m: iv for m, iv in r["metrics"].items()} | {"n": r["n"]} if r["metrics"]
                               else {"status": r["status"]}) for r in table}
    return {
        "dataset": dataset, "n_test": len(test), "n_persons": len(set(ctx.groups)),
        "compile_run": str(ctx.compile.path) if ctx.compile.path else None,
        "compile_run_used": ctx.compile.available, "compile_run_reason": ctx.compile.reason, "warnings": warnings,
        "table": table, "test_result": test_result,
        "rows": {n: {"status": r.status, "n": r.n, "source": r.source, "note": r.note, "command": r.command,
                     **r.extra} for n, r in rows.items()},
        "claims": claims, "quality": quality, "motives": motives, "plots": plots, "bayes_optimal_expected": bayes,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_claims(config: ClaimsConfig, *, splits: Any = None, taxonomy: Any = None, lm: Any = None,
               judge_lm: Any = None, programs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs the paper-claims experiment and writes ``claims.md``, ``claims.json`` and the plots.

    Args:
        config: The experiment config.
        splits: Preloaded splits: one :class:`careers.splits.DatasetSplits` (used for every dataset) or a mapping
            dataset -> splits; None loads each dataset with :func:`careers.datasets.load_dataset`.
        taxonomy: A loaded O*NET taxonomy (None loads it from ``config.data_dir``).
        lm: A ready LM (e.g. ``DummyLM``) for the zero-shot, optimized and hybrid rows instead of ``config.lm``.
        judge_lm: A ready LM for the reason judge instead of ``config.judge_lm``.
        programs: Row name -> ready callable program (``program(**example.inputs())`` returning a prediction with
            ``occupation``/``onet_code``/``ranked``/``reason``); overrides how that row's program is built.

    Returns:
        The results dict (RecBole-style ``test_result`` per dataset: row -> metric -> ``{mean, low, high, n}`` in
        [0, 1]): ``{"run_dir", "config", "k", "n_boot", "datasets": {dataset: {"table", "test_result", "rows",
        "claims", "quality", "plots", "bayes_optimal_expected", ...}}, "seconds"}``; ``claims.json`` holds it in
        JSON form.
    """
    t0 = time.perf_counter()
    run_dir = make_run_dir(config.output_dir, config.run_name, prefix="claims", resume=config.resume)
    write_config(run_dir, config)
    taxonomy = taxonomy or OnetTaxonomy.load(config.data_dir)
    lm = lm if lm is not None else lm_spec(config.lm, api_base=config.api_base)
    judge: Any = None
    judge_spec = judge_lm if judge_lm is not None else lm_spec(config.judge_lm, role="judge_lm",
                                                                  api_base=config.api_base)
    if judge_spec == HEURISTIC:
        judge = HEURISTIC  # built per dataset (its training statistics) in run_dataset
    elif judge_spec is not None:
        judge = ReasonJudge(judge_spec)
    results: dict[str, Any] = {"run_dir": str(run_dir), "config": asdict(config), "k": config.k,
                               "n_boot": config.n_boot, "alpha": config.alpha, "datasets": {}}

    with usage.tracking() as tracker, dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        if isinstance(judge, ReasonJudge):
            tracker.register(judge.lm, "judge")
        for dataset in config.datasets:
            logger.info("dataset %s", dataset)
            results["datasets"][dataset] = run_dataset(config, dataset, run_dir, taxonomy, splits=splits, lm=lm,
                                                       judge=judge, programs=programs)
    results["lm_usage"] = tracker.as_dict()
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write_provenance(run_dir, lm_usage=results["lm_usage"])  # with the LM heads the loaded models used
    text = render_markdown(results)
    if results["lm_usage"]:
        text += "\n## LM usage per role\n\n" + usage.format_table(results["lm_usage"]) + "\n"
    (run_dir / "claims.md").write_text(text, encoding="utf-8")
    write_json(run_dir / "claims.json", jsonable(results))
    logger.info("claims written to %s (%.0fs)", run_dir, results["seconds"])
    failed = unusable_lm_rows(results) if lm is not None else []  # an LM was asked for and every LM row failed
    if failed:
        exc = RunFailed(f"every LM row failed ({'; '.join(failed)}); only the LM-free rows have results. "
                        f"See lm_usage in {run_dir / 'claims.json'}.")
        exc.results = results
        raise exc
    return results


def main(argv: Sequence[str] | None = None, **inject: Any) -> int:
    """Command-line entry point; ``inject`` (``lm``, ``judge_lm``, ``programs``, ``splits``, ``taxonomy``) is passed to
    :func:`run_claims` (tests)."""

    def report(results: dict[str, Any]) -> int:
        print((Path(results["run_dir"]) / "claims.md").read_text(encoding="utf-8"))
        print(f"run directory: {results['run_dir']}")
        return 0

    def on_error(exc: BaseException) -> int | None:
        if isinstance(exc, RunFailed):  # claims.md/claims.json are written; the summary is the last line
            print((Path(exc.results["run_dir"]) / "claims.md").read_text(encoding="utf-8"))
            print_error(" ".join(str(exc).split()))
            return 1
        return None

    return run_cli(lambda: load_config(ClaimsConfig, argv, description=ClaimsConfig.__doc__),
                   lambda config: run_claims(config, **inject), report, errors=(RunFailed, *RUN_ERRORS),
                   on_error=on_error)


if __name__ == "__main__":
    sys.exit(main())
