"""The rows of Table A: how each model's predictions on the shared test sample are produced or reused.

:func:`build_row` produces one row (:class:`experiments.tables.RowScores`) in a :class:`RowContext`: supervised
baselines fitted here, zero-shot LM programs, the optimized prompt of a compile run (read with
:mod:`compile.run_reader`), distilled students of distill runs (read with :mod:`finetune.run_reader`), the hybrid
program and the Bayes-optimal ceiling. Predictions already on disk are reused; a row that cannot run is reported as
"not run" with the command that produces it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dspy import Prediction

from compile.run_reader import read_compile_run
from experiments.tables import (
    STATUS_FAILED,
    STATUS_NOT_RUN,
    RowScores,
    align_records,
    example_key,
    scores_from_records,
)
from finetune.run_reader import read_distill_run
from lms import usage
from lms.model_store import adapter_fingerprint, is_local_spec, parse_local_spec
from lms.resolve import lm_model
from programs.baseline_registry import BASELINE_INPUTS, load_baseline, saved_kind
from programs.factory import build_baseline, build_program
from programs.hybrid import HybridNextOccupation
from programs.next_occupation import NextOccupation
from programs.scoring import judge_means, prediction_record, score_program
from runkit.files import JsonlWriter, read_records

logger = logging.getLogger(__name__)
SIGNATURE_FIELD = "row_signature"  # in each prediction record: the program that made it

# name -> (label, group); the order of Table A
ROW_SPECS: dict[str, tuple[str, str]] = {
    "frequency": ("Frequency", "supervised"),
    "markov": ("Markov", "supervised"),
    "return_markov": ("Return-aware Markov", "supervised"),
    "sequence": ("Sequence (GRU)", "supervised"),
    "zero_shot_two_step": ("Zero-shot two-step", "zero-shot LM"),
    "zero_shot_direct": ("Zero-shot direct", "zero-shot LM"),
    "optimized": ("Optimized prompt", "compiled"),
    "distilled_joint": ("Distilled joint", "distilled"),
    "distilled_two_model": ("Distilled two-model", "distilled"),
    "distilled_direct": ("Distilled direct (no reason)", "distilled"),
    "distilled_hybrid": ("Distilled hybrid (baseline + student)", "distilled"),  # named by its baseline when known
    "hybrid": ("Hybrid (return-Markov + LM)", "hybrid"),
    "bayes_optimal": ("Bayes-optimal (ceiling)", "ceiling"),
}
ALL_ROWS = tuple(ROW_SPECS)
LM_FREE_ROWS = ("frequency", "markov", "return_markov", "sequence", "bayes_optimal")
SUPERVISED = ("frequency", "markov", "return_markov", "sequence")
DISTILL_ROWS = {"distilled_joint": "joint", "distilled_two_model": "two_model", "distilled_direct": "direct",
                "distilled_hybrid": "hybrid"}
BASELINE_SHORT = {"frequency": "frequency", "markov": "Markov", "return_markov": "return-Markov", "sequence": "GRU"}


def distilled_hybrid_label(kind: str | None) -> str:
    """Table A's label of the distilled hybrid row, naming the baseline whose candidates its student reads."""
    if kind is None:
        return ROW_SPECS["distilled_hybrid"][0]
    return f"Distilled hybrid ({BASELINE_SHORT.get(kind, kind)} + student)"


def run_path(template: str | None, dataset: str) -> Path | None:
    """A configured run directory, with ``{dataset}`` replaced by the dataset name."""
    if not template:
        return None
    return Path(template.replace("{dataset}", dataset.split(":")[0]))


def distill_command(row: str, compile_run: Path | None, target: Path | None) -> str:
    """The ``finetune.distill`` command that produces a missing distill run for ``row``."""
    mode = DISTILL_ROWS[row]
    parts = ["python -m finetune.distill", f"--from_run {compile_run or 'runs/compile/<RUN>'}", f"--mode {mode}"]
    if target is not None:
        parts += [f"--output_dir {target.parent}", f"--run_name {target.name}"]
    return " ".join(parts)


def _bayes_record(example: Any, taxonomy: Any, k: int) -> dict[str, Any]:
    dist = example.get("next_distribution")
    ranked = sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    code = ranked[0][0]
    title = taxonomy.occupations[code].title if taxonomy is not None and code in taxonomy.occupations else code
    return {"person_id": example.get("person_id"), "history": example.get("history"),
            "gold_codes": list(example.get("gold_codes") or []), "occupation": title, "onet_code": code,
            "matched": True, "ranked": [{"onet_code": c, "p": round(p, 6)} for c, p in ranked], "reason": None,
            "judge": None}


class RowContext:
    """Per-dataset state shared by the row runners."""

    def __init__(self, config: Any, dataset: str, run_dir: Path, taxonomy: Any, splits: Any, test: list,
                 lm: Any, judge: Any, programs: Mapping[str, Any]):
        self.config, self.dataset, self.run_dir, self.taxonomy = config, dataset, run_dir, taxonomy
        self.splits, self.test, self.lm, self.judge, self.programs = splits, test, lm, judge, programs
        self.keys = [example_key(ex) for ex in test]
        self.groups = [str(ex.get("person_id")) for ex in test]
        self.compile = read_compile_run(run_path(config.compile_run, dataset), dataset)
        self.records: dict[str, list[Any]] = {}

    def pred_path(self, row: str) -> Path:
        return self.run_dir / f"predictions_{self.dataset.split(':')[0]}_{row}.jsonl"

    def partial_path(self, row: str) -> Path:
        """Where a row's predictions are appended as they finish, until the row's file is written."""
        return self.run_dir / f"predictions_{self.dataset.split(':')[0]}_{row}.partial.jsonl"

    def _earlier(self, path: Path, name: str, signature: str | None) -> list[dict]:
        """This run's earlier records of a row in ``path``: failed ones dropped (they are retried), and with a
        ``signature`` only the records made by that program."""
        earlier = [r for r in read_records(path) if not r.get("error")]
        if signature is not None:
            kept = [r for r in earlier if r.get(SIGNATURE_FIELD) == signature]
            if len(kept) < len(earlier):
                logger.warning("row %s: %d earlier predictions in %s came from another program (signature "
                               "differs from %s); they are predicted again", name, len(earlier) - len(kept), path,
                               signature)
            earlier = kept
        return earlier

    def _judge_missing(self, records: list[dict]) -> None:
        """Adds the judge's verdict to records that have a reason but none (predictions kept by an interrupted run
        are appended before the row is judged)."""
        todo = [i for i, rec in enumerate(records) if rec and rec.get("reason") and rec.get("judge") is None]
        if not todo:
            return
        with usage.role("judge"):
            _, verdicts = judge_means(self.judge, [self.test[i] for i in todo],
                                      [Prediction(reason=records[i]["reason"]) for i in todo],
                                      threads=self.config.threads)
        for i, verdict in zip(todo, verdicts, strict=True):
            records[i] = {**records[i], "judge": verdict}

    def row(self, name: str, **kw: Any) -> RowScores:
        label, group = ROW_SPECS[name]
        return RowScores(name=name, label=label, group=group, **kw)

    def finish(self, name: str, records: list[Any], source: str, note: str = "", signature: str | None = None,
               **extra: Any) -> RowScores:
        """Writes the row's records (with the ``signature`` of the program that made them) and scores them."""
        with JsonlWriter(self.pred_path(name), mode="w") as out:
            for key, rec in zip(self.keys, records, strict=True):
                out.write(_stamped(rec, key, signature))
        self.records[name] = records
        scores = scores_from_records(self.test, records, self.taxonomy, self.config.k)
        return self.row(name, keys=list(self.keys), groups=list(self.groups), scores=scores, source=source,
                        note=note, extra=dict(extra))

    def run_program(self, name: str, make: Callable[[], Any] | None, reuse: Sequence[tuple[str, list[dict]]] = (),
                    inputs: tuple[str, ...] | None = None, judged: bool = True, command: str | None = None,
                    why_not: str = "", signature: str | None = None) -> RowScores:
        """Reuses records (this run's, then ``reuse`` sources) and runs the program on the examples they miss.

        With a ``signature`` (what identifies the row's program, e.g. a student's adapter files), this run's earlier
        records are reused only when they carry the same one: a retrained student is predicted again.
        """
        sources: list[tuple[str, list[dict]]] = []
        own, partial = self.pred_path(name), self.partial_path(name)
        for path in (own, partial):  # the row's file, then what an interrupted run appended
            if self.config.resume and path.is_file():
                sources.append((str(path), self._earlier(path, name, signature)))
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
        if judged and self.judge is not None and partial.is_file():
            self._judge_missing(aligned)
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
            with JsonlWriter(partial, mode="a" if self.config.resume else "w") as out:
                _, records = score_program(
                    program, [self.test[i] for i in missing], self.taxonomy, judge=self.judge if judged else None,
                    threads=self.config.threads, ks=tuple(sorted({1, self.config.k})), inputs=inputs,
                    on_prediction=lambda ex, pred: out.write(_stamped(prediction_record(ex, pred), example_key(ex),
                                                                      signature)))
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
        row = self.finish(name, aligned, "; ".join(used), note=f"{errors} failed predictions" if errors else "",
                          signature=signature)
        partial.unlink(missing_ok=True)  # the row's file now holds every record
        return row


def _stamped(record: Mapping[str, Any], key: str, signature: str | None) -> dict[str, Any]:
    """A row's record as written: with the example's key and the signature of the program that made it."""
    return {**record, "key": key, **({SIGNATURE_FIELD: signature} if signature else {})}


def baseline_kwargs(config: Any, name: str) -> dict[str, Any]:
    """The options a supervised row's baseline is built with: ``k``, the config's ``baseline_options[name]`` and, for
    the seeded ``sequence`` model, the claims seed unless the options set one."""
    kwargs: dict[str, Any] = {"k": config.k, **(config.baseline_options.get(name) or {})}
    if name == "sequence":
        kwargs.setdefault("seed", config.seed)
    return kwargs


def _row_baseline(ctx: RowContext, name: str) -> RowScores:
    def make():
        return build_baseline(name, taxonomy=ctx.taxonomy, trainset=list(ctx.splits.train),
                              **baseline_kwargs(ctx.config, name))

    return ctx.run_program(name, make, inputs=BASELINE_INPUTS, judged=False)


def _row_bayes(ctx: RowContext) -> RowScores:
    if not ctx.test or any(not ex.get("next_distribution") for ex in ctx.test):
        return ctx.row("bayes_optimal", status=STATUS_NOT_RUN,
                       note="examples carry no next_distribution (only the synthetic generator knows the true law)")
    records = [_bayes_record(ex, ctx.taxonomy, ctx.config.k) for ex in ctx.test]
    return ctx.finish("bayes_optimal", records, "argmax of each example's next_distribution")


def _lm_unavailable(ctx: RowContext) -> bool:
    return ctx.lm is None


def _nextocc(ctx: RowContext, mode: str, **kw: Any):
    return NextOccupation(mode=mode, taxonomy=ctx.taxonomy, k=ctx.config.k, top1=ctx.config.top1, **kw)


def _compile_reuse(ctx: RowContext, name: str) -> list[tuple[str, list[dict]]]:
    """The compile run's predictions for ``name`` when they were made with our LM (same spec string)."""
    c = ctx.compile
    if not c.available or ctx.config.lm is None or lm_model(c.teacher_lm) != lm_model(ctx.config.lm):
        return []
    return [(f"{c.path}/predictions_{name}_*", c.predictions(name))]


def _row_zero_shot(ctx: RowContext, mode: str) -> RowScores:
    name = f"zero_shot_{mode}"
    reuse = _compile_reuse(ctx, "zero_shot") if ctx.compile.mode == mode else []
    make = None if _lm_unavailable(ctx) else (lambda: _nextocc(ctx, mode, lm=ctx.lm))
    return ctx.run_program(name, make, reuse, judged=mode != "direct", why_not="no LM configured (lm: null)",
                           command="set lm: local:gemma-3-270m (or a litellm model string)")


def _compile_command(ctx: RowContext) -> str:
    target = run_path(ctx.config.compile_run, ctx.dataset) or Path("runs/compile/<RUN>")
    return (f"python -m compile.optimize --dataset {ctx.dataset} --output_dir {target.parent} "
            f"--run_name {target.name}")


def _row_optimized(ctx: RowContext) -> RowScores:
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


def _row_distilled(ctx: RowContext, name: str) -> RowScores:
    cfg = ctx.config
    expected = DISTILL_ROWS[name]
    target = run_path(getattr(cfg, f"distill_{expected}_run"), ctx.dataset)
    info = read_distill_run(target)
    command = distill_command(name, run_path(cfg.compile_run, ctx.dataset), target)
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
            if expected == "hybrid":  # the student's own prompts: candidates of the baseline its traces used
                baseline = load_baseline(info["baseline"], taxonomy=ctx.taxonomy)
                return HybridNextOccupation(baseline=baseline, k_candidates=info["k_candidates"], mode="joint",
                                            lm=reasoner, taxonomy=ctx.taxonomy, k=cfg.k, top1=cfg.top1,
                                            answer_set=cfg.hybrid_answer_set)
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
    restricted = expected == "hybrid" and cfg.hybrid_answer_set != "titles"
    if target is not None and target.is_dir() and not restricted:  # the distill run's own titles-mode predictions
        reuse = [(str(p), read_records(p)) for p in sorted(target.glob("predictions*.jsonl"))]
    signature = student_signature(info["students"]) if info["available"] else None
    if signature and restricted:
        signature += f"|answer_set={cfg.hybrid_answer_set}"
    row = ctx.run_program(name, make, reuse, judged=expected != "direct", command=command, why_not=why.strip("; "),
                          inputs=BASELINE_INPUTS if expected == "hybrid" else None, signature=signature)
    if info.get("evaluation"):
        row.extra["distill_reported_evaluation"] = info["evaluation"]
    if info["available"]:
        row.extra["students"] = info["students"]
        if expected == "hybrid" and info.get("baseline"):  # claim (h1) compares the hybrid with this parent
            row.extra["baseline_kind"] = saved_kind(info["baseline"])
            row.label = distilled_hybrid_label(row.extra["baseline_kind"])
    return row


def student_signature(students: Mapping[str, str | None]) -> str:
    """Identifies distilled students by their specs and adapter files (:func:`~lms.model_store.adapter_fingerprint`)."""
    parts = []
    for role in sorted(students):
        spec = students[role] or ""
        parts.append(f"{role}={spec}")
        adapter = parse_local_spec(spec).adapter if is_local_spec(spec) else None
        if adapter and Path(adapter).expanduser().is_dir():
            parts.append(adapter_fingerprint(Path(adapter).expanduser()))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _row_hybrid(ctx: RowContext) -> RowScores:
    def make():
        return build_program("hybrid", lm=ctx.lm, taxonomy=ctx.taxonomy, trainset=list(ctx.splits.train),
                             k=ctx.config.k, top1=ctx.config.top1, answer_set=ctx.config.hybrid_answer_set)

    answer_set = ctx.config.hybrid_answer_set
    return ctx.run_program("hybrid", None if _lm_unavailable(ctx) else make, inputs=BASELINE_INPUTS,
                           why_not="no LM configured (lm: null)",
                           command="set lm: local:gemma-3-270m (or a litellm model string)",
                           signature=f"answer_set={answer_set}")


def build_row(ctx: RowContext, name: str) -> RowScores:
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
