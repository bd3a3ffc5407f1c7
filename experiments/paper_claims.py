"""The paper-claims experiment: ``python -m experiments.paper_claims --config configs/claims_<size>.yaml``.

For each dataset it scores every model of Table A on the SAME seeded per-person sample of the test split
(:func:`careers.splits.sample_per_person`), so that every comparison is paired:

* supervised baselines (frequency, Markov, return-aware Markov), fitted on the train split here (seconds);
* zero-shot LM programs (two-step, direct) on ``lm``;
* the optimized prompt of a compile run (``compile_run``: its ``program.json``; its prediction files are reused for
  the examples they cover when they were made with the same LM);
* distilled students of distill runs (``distill_*_run``: ``metrics.json`` ``students``/``mode``, or the adapters on
  disk); a row whose run directory is absent is reported as "not run" with the command that produces it -- nothing
  is ever trained here;
* the hybrid program (return-aware Markov candidates + LM);
* on synthetic data the Bayes-optimal predictor (argmax of each example's exact ``next_distribution``).

Per-example predictions are written to ``predictions_<dataset>_<row>.jsonl`` in the output run directory and reused on
a re-run with the same ``run_name`` (``resume``); the metrics are always recomputed from the prediction records with
:func:`metrics.accuracy.score_example`. Outputs: ``claims.md`` (Table A with 95% person-level bootstrap CIs, one
sentence per claim, the reason-quality tables), ``claims.json`` (the results dict of :func:`run_claims`),
``accuracy_<dataset>.png``, ``quality_<dataset>.png``, ``config.yaml``.

Claims: (a) distilled vs zero-shot / best supervised / optimized prompt, (b) joint vs two-model student -- paired
bootstrap CIs of the difference; (c) accuracy by reason-quality bucket and its Spearman / point-biserial
correlation, from the compile run's judged ``candidates.jsonl`` and from judged predictions (``judge_lm``).

Tests and notebooks inject ready LMs (``lm=``, ``judge_lm=``), per-row programs (``programs={"distilled_joint":
callable}``), splits and the taxonomy into :func:`run_claims`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from experiments.tables import (
    STATUS_FAILED,
    STATUS_NOT_RUN,
    STATUS_OK,
    QualityData,
    RowScores,
    accuracy_table,
    align_records,
    example_key,
    jsonable,
    metric_names,
    paired_claim,
    quality_buckets,
    quality_from_candidates,
    quality_from_records,
    render_markdown,
    scores_from_records,
    verdict,
)
from runkit.config import ConfigError, load_config
from runkit.files import JsonlWriter, read_jsonl, write_config, write_json
from runkit.run_dir import RunFailed, make_run_dir

logger = logging.getLogger(__name__)

# name -> (label, group); the order of Table A
ROW_SPECS: dict[str, tuple[str, str]] = {
    "frequency": ("Frequency", "supervised"),
    "markov": ("Markov", "supervised"),
    "return_markov": ("Return-aware Markov", "supervised"),
    "zero_shot_two_step": ("Zero-shot two-step", "zero-shot LM"),
    "zero_shot_direct": ("Zero-shot direct", "zero-shot LM"),
    "optimized": ("Optimized prompt", "compiled"),
    "distilled_joint": ("Distilled joint", "distilled"),
    "distilled_two_model": ("Distilled two-model", "distilled"),
    "distilled_direct": ("Distilled direct (no reason)", "distilled"),
    "hybrid": ("Hybrid (return-Markov + LM)", "hybrid"),
    "bayes_optimal": ("Bayes-optimal (ceiling)", "ceiling"),
}
ALL_ROWS = tuple(ROW_SPECS)
LM_FREE_ROWS = ("frequency", "markov", "return_markov", "bayes_optimal")
SUPERVISED = ("frequency", "markov", "return_markov")
DISTILL_ROWS = {"distilled_joint": "joint", "distilled_two_model": "two_model", "distilled_direct": "direct"}
BASELINE_INPUTS = ("history", "states", "career")


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
    n_test: int = field(default=40, metadata={
        "help": "Test persons: a seeded per-person sample (one transition each) of the test split, shared by all rows."})
    seed: int = field(default=0, metadata={"help": "Seed of the dataset split, the test sample and the bootstrap."})
    lm: str | dict[str, Any] | None = field(default="local:gemma-3-270m", metadata={
        "help": "LM of the zero-shot, optimized and hybrid rows: a spec string (local:gemma-3-270m, a litellm model) "
                "or a mapping {model, api_base, api_key_env, max_tokens, temperature, num_retries}; null skips those "
                "rows (reported as not run)."})
    judge_lm: str | dict[str, Any] | None = field(default=None, metadata={
        "help": "LM of the reason judge for LM rows run here (string or mapping like lm; claim (c) from judged "
                "predictions); null: no judge (claim (c) then uses the compile run's judged candidates only)."})
    api_base: str | None = field(default=None, metadata={
        "help": "Default API base URL of remote string specs (a mapping's own api_base wins)."})
    threads: int = field(default=4, metadata={"help": "Worker threads for LM rows (local LMs batch concurrent calls)."})
    k: int = field(default=5, metadata={"help": "Ranking cut-off: Acc@k and the length of the ranked predictions."})
    top1: str = field(default="answer", metadata={
        "help": "LM programs' top-1: 'answer' (the normalized generated title) or 'ranked'."})
    rows: list[str] = field(default_factory=lambda: list(ALL_ROWS), metadata={
        "help": f"Rows of Table A to produce, from: {', '.join(ALL_ROWS)} (bayes_optimal only on synthetic data)."})
    compile_run: str | None = field(default="runs/compile/demo", metadata={
        "help": "Compile run directory to reuse (program.json, predictions_*.jsonl, candidates.jsonl); '{dataset}' is "
                "replaced by the dataset name. Never re-created here."})
    distill_joint_run: str | None = field(default="runs/distill/demo_joint", metadata={
        "help": "Distill run directory (mode joint) for the distilled joint row; '{dataset}' is replaced."})
    distill_two_model_run: str | None = field(default="runs/distill/demo_two_model", metadata={
        "help": "Distill run directory (mode two_model) for the distilled two-model row; '{dataset}' is replaced."})
    distill_direct_run: str | None = field(default=None, metadata={
        "help": "Run directory of a student trained without reasons (direct prompts) for the distilled direct row."})
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
        "help": "With run_name: reuse predictions_<dataset>_<row>.jsonl already in the run directory."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap replicates of every CI."})
    alpha: float = field(default=0.05, metadata={"help": "1 - confidence level of the CIs (0.05 gives 95 percent CIs)."})
    log_level: str = field(default="INFO", metadata={"help": "Logging level: DEBUG, INFO, WARNING or ERROR."})

    def __post_init__(self):
        from lms.resolve import lm_spec

        self.lm = lm_spec(self.lm, role="lm")
        self.judge_lm = lm_spec(self.judge_lm, role="judge_lm")
        if not self.datasets:
            raise ValueError("datasets must name at least one dataset (synthetic, nlsy79).")
        unknown = [r for r in self.rows if r not in ROW_SPECS]
        if unknown:
            raise ValueError(f"unknown rows {unknown}; choose from {list(ALL_ROWS)}.")
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
        if self.primary_metric not in metric_names(self.k):
            raise ValueError(f"primary_metric must be one of {list(metric_names(self.k))}, got {self.primary_metric!r}.")


# ---------------------------------------------------------------------- run directories of other stages
def _path(template: str | None, dataset: str) -> Path | None:
    if not template:
        return None
    return Path(template.replace("{dataset}", dataset.split(":")[0]))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        logger.warning("could not read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("could not read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _records(path: Path) -> list[dict]:
    try:
        return [r for r in read_jsonl(path) if isinstance(r, dict)]
    except (OSError, ValueError) as exc:
        logger.warning("could not read %s: %s", path, exc)
        return []


@dataclass
class CompileRun:
    """What a compile run directory offers: its config, optimized program, predictions and judged candidates."""

    path: Path | None
    config: dict[str, Any] = field(default_factory=dict)
    available: bool = False
    reason: str = ""

    @property
    def mode(self) -> str:
        return str(self.config.get("mode") or "two_step")

    @property
    def teacher_lm(self) -> str | None:
        return self.config.get("teacher_lm")

    @property
    def program_path(self) -> Path | None:
        p = self.path / "program.json" if self.path else None
        return p if p is not None and p.is_file() else None

    def predictions(self, name: str) -> list[dict]:
        """Records of ``predictions_<name>_<split>.jsonl`` over every split on disk."""
        out: list[dict] = []
        if self.path is None:
            return out
        for split in ("test", "dev"):
            p = self.path / f"predictions_{name}_{split}.jsonl"
            if p.is_file():
                out.extend(_records(p))
        return out

    def candidates(self) -> list[dict]:
        p = self.path / "candidates.jsonl" if self.path else None
        return _records(p) if p is not None and p.is_file() else []


def read_compile_run(path: Path | None, dataset: str) -> CompileRun:
    """Reads a compile run directory defensively; ``available`` is False (with a reason) when it is absent or was made
    on another dataset."""
    if path is None:
        return CompileRun(None, reason="no compile_run configured")
    if not path.is_dir():
        return CompileRun(path, reason=f"{path} does not exist")
    cfg = _read_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    if cfg.get("dataset") and str(cfg["dataset"]) != dataset:
        return CompileRun(path, cfg, reason=f"{path} was compiled on dataset {cfg['dataset']!r}, not {dataset!r}")
    return CompileRun(path, cfg, available=True)


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
    return out


def read_distill_run(path: Path | None) -> dict[str, Any]:
    """Reads a distill run directory defensively (``finetune.distill`` is still evolving).

    Returns:
        ``{"available": bool, "reason", "mode", "students": {"reasoner", "predictor"}, "evaluation", "path"}``; the
        students come from ``metrics.json`` (``students``), else from the adapters on disk (``<stage>/adapter``) and
        the base of ``config.yaml``.
    """
    out: dict[str, Any] = {"available": False, "path": str(path) if path else None, "students": {}, "mode": None,
                           "evaluation": None, "reason": ""}
    if path is None:
        out["reason"] = "no distill run configured"
        return out
    if not path.is_dir():
        out["reason"] = f"{path} does not exist"
        return out
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    cfg = _read_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    out["mode"] = metrics.get("mode") or cfg.get("mode")
    out["evaluation"] = metrics.get("evaluation")
    students = metrics.get("students") if isinstance(metrics.get("students"), dict) else {}
    if not students:
        base = metrics.get("base") or cfg.get("base") or "local:gemma-3-270m"
        base = base if str(base).startswith("local") else f"local:{base}"

        def adapter(*stages: str) -> str | None:
            for s in stages:
                if (path / s / "adapter").is_dir():
                    return f"{base}+{(path / s / 'adapter').resolve()}"
            return None

        reasoner = adapter("reason_dpo", "joint", "reason")
        predictor = adapter("joint", "predict")
        students = {k: v for k, v in (("reasoner", reasoner), ("predictor", predictor)) if v}
    out["students"] = dict(students)
    if not students:
        out["reason"] = f"{path} has no students yet (no metrics.json 'students' and no <stage>/adapter)"
        return out
    gone = [spec.split("+", 1)[1] for spec in students.values()
            if isinstance(spec, str) and "+" in spec and not Path(spec.split("+", 1)[1]).expanduser().is_dir()]
    if gone:
        out["reason"] = f"{path}: adapter folder(s) missing: {', '.join(gone)}"
        return out
    out["available"] = True
    return out


def distill_command(row: str, compile_run: Path | None, target: Path | None) -> str:
    """The ``finetune.distill`` command that produces a missing distill run for ``row``."""
    mode = DISTILL_ROWS[row]
    parts = ["python -m finetune.distill", f"--from_run {compile_run or 'runs/compile/<RUN>'}", f"--mode {mode}"]
    if target is not None:
        parts += [f"--output_dir {target.parent}", f"--run_name {target.name}"]
    return " ".join(parts)


# ---------------------------------------------------------------------- programs
def _lm_arg(spec: Any, api_base: str | None, role: str = "lm") -> Any:
    if spec is None:
        return None
    from lms.resolve import lm_spec

    return lm_spec(spec, role=role, api_base=api_base)


def _model(spec: Any) -> str | None:
    return spec.get("model") if isinstance(spec, dict) else spec


def _bayes_record(example: Any, taxonomy: Any, k: int) -> dict[str, Any]:
    dist = example.get("next_distribution")
    ranked = sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    code = ranked[0][0]
    title = taxonomy.occupations[code].title if taxonomy is not None and code in taxonomy.occupations else code
    return {"person_id": example.get("person_id"), "history": example.get("history"),
            "gold_codes": list(example.get("gold_codes") or []), "occupation": title, "onet_code": code,
            "matched": True, "ranked": [{"onet_code": c, "p": round(p, 6)} for c, p in ranked], "reason": None,
            "judge": None}


class _Context:
    """Per-dataset state shared by the row runners."""

    def __init__(self, config: ClaimsConfig, dataset: str, run_dir: Path, taxonomy: Any, splits: Any, test: list,
                 lm: Any, judge: Any, programs: Mapping[str, Any]):
        self.config, self.dataset, self.run_dir, self.taxonomy = config, dataset, run_dir, taxonomy
        self.splits, self.test, self.lm, self.judge, self.programs = splits, test, lm, judge, programs
        self.keys = [example_key(ex) for ex in test]
        self.groups = [str(ex.get("person_id")) for ex in test]
        self.compile = read_compile_run(_path(config.compile_run, dataset), dataset)
        self.records: dict[str, list[Any]] = {}

    def pred_path(self, row: str) -> Path:
        return self.run_dir / f"predictions_{self.dataset.split(':')[0]}_{row}.jsonl"

    def row(self, name: str, **kw: Any) -> RowScores:
        label, group = ROW_SPECS[name]
        return RowScores(name=name, label=label, group=group, **kw)

    def finish(self, name: str, records: list[Any], source: str, note: str = "", **extra: Any) -> RowScores:
        """Writes the row's records and scores them."""
        with JsonlWriter(self.pred_path(name), mode="w") as out:
            for key, rec in zip(self.keys, records, strict=True):
                out.write({**rec, "key": key})
        self.records[name] = records
        scores = scores_from_records(self.test, records, self.taxonomy, self.config.k)
        return self.row(name, keys=list(self.keys), groups=list(self.groups), scores=scores, source=source,
                        note=note, extra=dict(extra))

    def run_program(self, name: str, make: Callable[[], Any] | None, reuse: Sequence[tuple[str, list[dict]]] = (),
                    inputs: tuple[str, ...] | None = None, judged: bool = True, command: str | None = None,
                    why_not: str = "") -> RowScores:
        """Reuses records (this run's, then ``reuse`` sources) and runs the program on the examples they miss."""
        from programs.scoring import score_program

        sources: list[tuple[str, list[dict]]] = []
        own = self.pred_path(name)
        if self.config.resume and own.is_file():  # failed predictions of an earlier run are retried
            sources.append((str(own), [r for r in _records(own) if not r.get("error")]))
        sources.extend(reuse)
        aligned: list[Any] = [None] * len(self.test)
        used: list[str] = []
        for label, records in sources:
            got, _ = align_records(self.test, records)
            filled = 0
            for i, rec in enumerate(got):
                if aligned[i] is None and rec is not None:
                    aligned[i], filled = rec, filled + 1
            if filled:
                used.append(f"{label} ({filled})")
        missing = [i for i, rec in enumerate(aligned) if rec is None]
        program = None
        if missing:
            program = self.programs.get(name)
            if program is None and make is not None:
                try:
                    program = make()
                except Exception as exc:  # noqa: BLE001 - a row that cannot be built is reported, not fatal
                    logger.exception("row %s: could not build the program", name)
                    return self.row(name, status=STATUS_FAILED, note=f"{type(exc).__name__}: {exc}"[:300],
                                    command=command)
            if program is None:
                covered = len(self.test) - len(missing)
                note = why_not or "no program for this row"
                if covered:
                    note += f" (reused predictions cover only {covered}/{len(self.test)} test examples)"
                return self.row(name, status=STATUS_NOT_RUN, note=note, command=command)
            logger.info("[%s] row %s: running on %d of %d test examples", self.dataset, name, len(missing),
                        len(self.test))
            _, records = score_program(program, [self.test[i] for i in missing], self.taxonomy,
                                       judge=self.judge if judged else None, threads=self.config.threads,
                                       ks=tuple(sorted({1, self.config.k})), inputs=inputs)
            for i, rec in zip(missing, records, strict=True):
                aligned[i] = rec
            used.append(f"run here ({len(missing)})")
            if records and all(rec.get("error") for rec in records):
                # e.g. an LM that cannot load: do not report a row of silent misses
                return self.row(name, status=STATUS_FAILED, command=command,
                                note=f"every prediction failed; first error: {records[0]['error']}"[:400])
        else:
            logger.info("[%s] row %s: all %d test examples reused", self.dataset, name, len(self.test))
        errors = sum(1 for rec in aligned if rec.get("error"))
        return self.finish(name, aligned, "; ".join(used), note=f"{errors} failed predictions" if errors else "")


# ---------------------------------------------------------------------- rows
def _row_baseline(ctx: _Context, name: str) -> RowScores:
    from programs.factory import build_baseline

    def make():
        return build_baseline(name, taxonomy=ctx.taxonomy, trainset=list(ctx.splits.train), k=ctx.config.k)

    return ctx.run_program(name, make, inputs=BASELINE_INPUTS, judged=False)


def _row_bayes(ctx: _Context) -> RowScores:
    if not ctx.test or any(not ex.get("next_distribution") for ex in ctx.test):
        return ctx.row("bayes_optimal", status=STATUS_NOT_RUN,
                       note="examples carry no next_distribution (only the synthetic generator knows the true law)")
    records = [_bayes_record(ex, ctx.taxonomy, ctx.config.k) for ex in ctx.test]
    return ctx.finish("bayes_optimal", records, "argmax of each example's next_distribution")


def _lm_unavailable(ctx: _Context) -> bool:
    return ctx.lm is None


def _nextocc(ctx: _Context, mode: str, **kw: Any):
    from programs.next_occupation import NextOccupation

    return NextOccupation(mode=mode, taxonomy=ctx.taxonomy, k=ctx.config.k, top1=ctx.config.top1, **kw)


def _compile_reuse(ctx: _Context, name: str) -> list[tuple[str, list[dict]]]:
    """The compile run's predictions for ``name`` when they were made with our LM (same spec string)."""
    c = ctx.compile
    if not c.available or ctx.config.lm is None or _model(c.teacher_lm) != _model(ctx.config.lm):
        return []
    return [(f"{c.path}/predictions_{name}_*", c.predictions(name))]


def _row_zero_shot(ctx: _Context, mode: str) -> RowScores:
    name = f"zero_shot_{mode}"
    reuse = _compile_reuse(ctx, "zero_shot") if ctx.compile.mode == mode else []
    make = None if _lm_unavailable(ctx) else (lambda: _nextocc(ctx, mode, lm=ctx.lm))
    return ctx.run_program(name, make, reuse, judged=mode != "direct", why_not="no LM configured (lm: null)",
                           command="set lm: local:gemma-3-270m (or a litellm model string)")


def _compile_command(ctx: _Context) -> str:
    target = _path(ctx.config.compile_run, ctx.dataset) or Path("runs/compile/<RUN>")
    return (f"python -m compile.optimize --dataset {ctx.dataset} --output_dir {target.parent} "
            f"--run_name {target.name}")


def _row_optimized(ctx: _Context) -> RowScores:
    c = ctx.compile
    reuse = _compile_reuse(ctx, "optimized")
    make = None
    why = c.reason or "no LM configured (lm: null)"
    if c.available and c.program_path is not None and not _lm_unavailable(ctx):
        def make():
            program = _nextocc(ctx, c.mode, lm=ctx.lm)
            program.load(str(c.program_path))
            return program
    elif c.available and c.program_path is None:
        why = f"{c.path} has no program.json (the compile run did not finish its optimize phase)"
    return ctx.run_program("optimized", make, reuse, why_not=why, command=_compile_command(ctx))


def _row_distilled(ctx: _Context, name: str) -> RowScores:
    cfg = ctx.config
    expected = DISTILL_ROWS[name]
    target = _path(getattr(cfg, f"distill_{expected}_run"), ctx.dataset)
    info = read_distill_run(target)
    command = distill_command(name, _path(cfg.compile_run, ctx.dataset), target)
    why = info["reason"] or ""
    make = None
    if info["available"]:
        mode = info.get("mode")
        if mode and mode != expected:
            return ctx.row(name, status=STATUS_FAILED, command=command,
                           note=f"{target} is a {mode!r} distill run, expected {expected!r}")
        students = info["students"]
        reasoner = students.get("reasoner") or students.get("predictor")
        predictor = students.get("predictor") or reasoner

        def make():
            if expected == "joint":
                program = _nextocc(ctx, "joint", lm=reasoner)
            elif expected == "two_model":
                program = _nextocc(ctx, "two_step", reasoner_lm=reasoner, predictor_lm=predictor)
            else:
                program = _nextocc(ctx, "direct", lm=predictor)
            state = ctx.compile.program_path if ctx.compile.available else None
            if cfg.student_program_state and state is not None:
                try:
                    program.load(str(state))
                except Exception as exc:  # noqa: BLE001 - the student still runs zero-shot
                    logger.warning("could not load %s into %s: %s", state, name, exc)
            return program

    reuse: list[tuple[str, list[dict]]] = []
    if target is not None and target.is_dir():
        reuse = [(str(p), _records(p)) for p in sorted(target.glob("predictions*.jsonl"))]
    row = ctx.run_program(name, make, reuse, judged=expected != "direct", command=command, why_not=why.strip("; "))
    if info.get("evaluation"):
        row.extra["distill_reported_evaluation"] = info["evaluation"]
    if info["available"]:
        row.extra["students"] = info["students"]
    return row


def _row_hybrid(ctx: _Context) -> RowScores:
    from programs.factory import build_program

    def make():
        return build_program("hybrid", lm=ctx.lm, taxonomy=ctx.taxonomy, trainset=list(ctx.splits.train),
                             k=ctx.config.k, top1=ctx.config.top1)

    return ctx.run_program("hybrid", None if _lm_unavailable(ctx) else make, inputs=BASELINE_INPUTS,
                           why_not="no LM configured (lm: null)",
                           command="set lm: local:gemma-3-270m (or a litellm model string)")


def build_row(ctx: _Context, name: str) -> RowScores:
    """Produces one row of Table A (never raises: failures become a ``failed`` row with the error)."""
    try:
        if name in SUPERVISED:
            return _row_baseline(ctx, name)
        if name == "bayes_optimal":
            return _row_bayes(ctx)
        if name in ("zero_shot_two_step", "zero_shot_direct"):
            return _row_zero_shot(ctx, name[len("zero_shot_"):])
        if name == "optimized":
            return _row_optimized(ctx)
        if name in DISTILL_ROWS:
            return _row_distilled(ctx, name)
        if name == "hybrid":
            return _row_hybrid(ctx)
    except Exception as exc:  # noqa: BLE001 - one broken row must not lose the others
        logger.exception("row %s failed", name)
        return ctx.row(name, status=STATUS_FAILED, note=f"{type(exc).__name__}: {exc}"[:300])
    raise ValueError(f"unknown row {name!r}")


# ---------------------------------------------------------------------- claims
def _first_ok(rows: Mapping[str, RowScores], names: Sequence[str]) -> RowScores | None:
    return next((rows[n] for n in names if n in rows and rows[n].ok), None)


def _mean(row: RowScores, metric: str) -> float:
    values = row.scores[metric]
    return sum(values) / len(values) if values else float("-inf")


def build_claims(rows: Mapping[str, RowScores], config: ClaimsConfig, quality: Sequence[Mapping[str, Any]] = ()
                 ) -> list[dict[str, Any]]:
    """Claims (a), (b) as paired differences (every metric; the verdict on ``primary_metric``) and (c) from the
    reason-quality correlation.

    Returns:
        Claim dicts: ``id``, ``statement``, ``kind`` (paired or correlation), ``a``, ``b``, ``metric``, ``diff``
        (Interval), ``p``, ``verdict``, ``reason``, ``by_metric`` (paired: every metric).
    """
    metric = config.primary_metric
    boot = {"n_boot": config.n_boot, "alpha": config.alpha, "seed": config.seed}
    distilled = _first_ok(rows, ("distilled_joint", "distilled_two_model"))
    sup_ok = [rows[n] for n in SUPERVISED if n in rows and rows[n].ok]
    best_sup = max(sup_ok, key=lambda r: _mean(r, metric)) if sup_ok else None
    d_label = f"{distilled.label.lower()} student" if distilled else "distilled student"

    def paired(cid: str, statement: str, a: RowScores | None, b: RowScores | None, missing: str) -> dict[str, Any]:
        if a is None or b is None:
            return {"id": cid, "statement": statement, "kind": "paired", "a": a.name if a else None,
                    "b": b.name if b else None, "metric": metric, "diff": None, "p": None, "status": STATUS_NOT_RUN,
                    "verdict": STATUS_NOT_RUN, "reason": missing, "by_metric": {}}
        main = paired_claim(a, b, metric, **boot)
        by_metric = {m: paired_claim(a, b, m, **boot) for m in metric_names(config.k)}
        return {"id": cid, "statement": statement, "kind": "paired", **main,
                "by_metric": {m: {"diff": c["diff"], "p": c["p"], "verdict": c["verdict"]}
                              for m, c in by_metric.items()}}

    no_distilled = "no distilled student row ran (see Table A for the distill command)"
    claims = [
        paired("a1", f"The {d_label} is more accurate than the zero-shot LM (two-step)", distilled,
               _first_ok(rows, ("zero_shot_two_step",)),
               no_distilled if distilled is None else "the zero-shot two-step row did not run"),
        paired("a2", f"The {d_label} is more accurate than the best supervised baseline"
               + (f" ({best_sup.label})" if best_sup else ""), distilled, best_sup,
               no_distilled if distilled is None else "no supervised baseline ran"),
        paired("a3", f"The {d_label} is more accurate than the optimized prompt", distilled,
               _first_ok(rows, ("optimized",)),
               no_distilled if distilled is None else "the optimized-prompt row did not run"),
        paired("b", "The joint student is more accurate than the two-model student",
               _first_ok(rows, ("distilled_joint",)), _first_ok(rows, ("distilled_two_model",)),
               "both distilled joint and distilled two-model rows are needed"),
    ]
    claims.append(quality_claim(quality))
    return claims


def quality_claim(quality: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Claim (c): higher judged reason quality (oracle score) goes with correct predictions -- supported when the
    person-level bootstrap CI of the Spearman correlation (first source with data) is above 0."""
    statement = "Reasons the judge scores higher (oracle score) come with more accurate predictions"
    for q in quality:
        part = q["criteria"].get("oracle_score") or {}
        iv = part.get("spearman")
        if iv is not None and iv.n >= 3 and iv.mean == iv.mean and iv.low == iv.low:
            return {"id": "c", "statement": f"{statement} ({q['source']})", "kind": "correlation", "a": q["source"],
                    "b": None, "metric": "spearman", "diff": iv, "p": None, "status": STATUS_OK,
                    "verdict": verdict(iv), "reason": "", "pointbiserial": part.get("pointbiserial"),
                    "by_metric": {c: {"spearman": q["criteria"][c]["spearman"],
                                      "pointbiserial": q["criteria"][c]["pointbiserial"]} for c in q["criteria"]}}
    return {"id": "c", "statement": statement, "kind": "correlation", "a": None, "b": None, "metric": "spearman",
            "diff": None, "p": None, "status": STATUS_NOT_RUN, "verdict": STATUS_NOT_RUN,
            "reason": "no judged reasons with varying scores and outcomes (compile candidates or judge_lm)",
            "by_metric": {}}


# ---------------------------------------------------------------------- main flow
def _splits_for(dataset: str, splits: Any, config: ClaimsConfig, taxonomy: Any) -> Any:
    if splits is not None:
        if isinstance(splits, Mapping):
            if dataset in splits:
                return splits[dataset]
        else:
            return splits
    from careers.datasets import load_dataset

    kwargs: dict[str, Any] = {}
    if dataset == "synthetic":
        kwargs = {"n_persons": config.synthetic_persons, "taxonomy": taxonomy}
    return load_dataset(dataset, config.data_dir, config.seed, **kwargs)


def _quality_sources(ctx: _Context, rows: Mapping[str, RowScores], config: ClaimsConfig) -> list[QualityData]:
    sources = []
    if ctx.compile.available:
        cands = ctx.compile.candidates()
        if cands:
            sources.append(quality_from_candidates(cands, source=f"compile candidates ({ctx.compile.path.name})"))
    for name, records in ctx.records.items():
        row = rows.get(name)
        if row is None or not row.ok:
            continue
        data = quality_from_records(records, row.scores[config.primary_metric], row.groups,
                                    source=f"{row.label} predictions")
        if data.n:
            sources.append(data)
    return sources


def run_dataset(config: ClaimsConfig, dataset: str, run_dir: Path, taxonomy: Any, *, splits: Any = None,
                lm: Any = None, judge: Any = None, programs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Table A, claims and reason quality for one dataset (see the module docstring)."""
    from careers.splits import sample_per_person
    from experiments.plots import plot_accuracy, plot_quality

    t0 = time.perf_counter()
    data = _splits_for(dataset, splits, config, taxonomy)
    test = sample_per_person(list(data.test), config.n_test, config.seed)
    if not test:
        raise ValueError(f"dataset {dataset!r} has no test examples.")
    ctx = _Context(config, dataset, run_dir, taxonomy, data, test, lm, judge, programs or {})
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
    ds = dataset.split(":")[0]
    plots = {"accuracy": plot_accuracy(table, run_dir / f"accuracy_{ds}.png", config.primary_metric,
                                       title=f"{dataset}: {config.primary_metric} by model (n={len(test)})").name}
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
        "claims": claims, "quality": quality, "plots": plots, "bayes_optimal_expected": bayes,
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
    from careers.onet import OnetTaxonomy

    t0 = time.perf_counter()
    run_dir = make_run_dir(config.output_dir, config.run_name, prefix="claims", resume=config.resume)
    write_config(run_dir, config)
    taxonomy = taxonomy or OnetTaxonomy.load(config.data_dir)
    lm = lm if lm is not None else _lm_arg(config.lm, config.api_base)
    judge = None
    judge_spec = judge_lm if judge_lm is not None else _lm_arg(config.judge_lm, config.api_base, "judge_lm")
    if judge_spec is not None:
        from metrics.judge import ReasonJudge

        judge = ReasonJudge(judge_spec)
    results: dict[str, Any] = {"run_dir": str(run_dir), "config": asdict(config), "k": config.k,
                               "n_boot": config.n_boot, "alpha": config.alpha, "datasets": {}}
    import dspy

    from lms import usage

    with usage.tracking() as tracker, dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        if judge is not None:
            tracker.register(judge.lm, "judge")
        for dataset in config.datasets:
            logger.info("dataset %s", dataset)
            results["datasets"][dataset] = run_dataset(config, dataset, run_dir, taxonomy, splits=splits, lm=lm,
                                                       judge=judge, programs=programs)
    results["lm_usage"] = tracker.as_dict()
    results["seconds"] = round(time.perf_counter() - t0, 1)
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


def unusable_lm_rows(results: dict[str, Any]) -> list[str]:
    """``row: note`` of the failed LM rows when no LM row produced a result (else ``[]``): a run whose every LM call
    failed must not look like a result."""
    failed, ok = [], 0
    for dataset, part in results["datasets"].items():
        for name, row in (part.get("rows") or {}).items():
            if name in LM_FREE_ROWS:
                continue
            if row["status"] == STATUS_FAILED:
                failed.append(f"{dataset}/{name}: {' '.join(str(row.get('note') or '').split())[:200]}")
            elif row["status"] == STATUS_OK:
                ok += 1
    return failed if failed and not ok else []


def main(argv: Sequence[str] | None = None, **inject: Any) -> int:
    """Command-line entry point; ``inject`` (``lm``, ``judge_lm``, ``programs``, ``splits``, ``taxonomy``) is passed to
    :func:`run_claims` (tests)."""
    try:
        config = load_config(ClaimsConfig, argv, description=ClaimsConfig.__doc__)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        results = run_claims(config, **inject)
    except RunFailed as exc:  # claims.md/claims.json are written; the summary is the last line
        print((Path(exc.results["run_dir"]) / "claims.md").read_text(encoding="utf-8"))
        sys.stdout.flush()
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((Path(results["run_dir"]) / "claims.md").read_text(encoding="utf-8"))
    print(f"run directory: {results['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
