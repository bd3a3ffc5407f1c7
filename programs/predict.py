"""Batch prediction over a file of histories without gold labels: ``python -m programs.predict``.

Example::

    python -m programs.predict --program runs/distill/distill-a --input people.jsonl --output_dir runs/predict \
        --run_name people-a
    python -m programs.predict --program return_markov --dataset nlsy79 --input people.csv --on_bad_lines skip
    python -m programs.predict --program two_step --lm hosted_vllm/student --api_base http://gpu:8000/v1 --input p.jsonl

``--program`` is a program name (``frequency``/``markov``/``return_markov``: fitted on ``--dataset``'s train split;
``two_step``/``joint``/``direct`` on ``--lm``; ``hybrid``: ``--lm`` plus candidates fitted on ``--dataset``) or a run
directory: a saved program, a ``compile.optimize`` run, a ``finetune.distill`` run (:meth:`NextOccupation.load`), or a
``programs.evaluate`` baseline run (its ``model.json``). The input is JSONL (one history per line, as
:mod:`careers.user_data` documents; ``person_id`` is the record id) or the long CSV format of the same module.

The run directory gets ``predictions.jsonl`` (one record per history: reason, occupation, O*NET code, ranked titles
with scores and O*NET OnLine links, the ranking method), appended and flushed per record, so re-running the same
``--run_name`` resumes and skips the ids already predicted (a CSV person with an invalid row is skipped whole); ``summary.json`` (counts, skipped lines with
``file:line`` and the reason, seconds); ``config.yaml`` and ``provenance.json``. ``--on_bad_lines error`` (default)
stops at the first invalid line naming it; ``skip`` reports and counts it. A run that predicts nothing exits non-zero.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from careers.datasets import load_splits
from careers.history import CareerHistory, Education, Job
from careers.onet import OnetTaxonomy
from careers.user_data import CSV_COLUMNS, CSV_REQUIRED, EDU_FIELDS, JOB_FIELDS, _cell, _entry_errors
from lms.model_store import DEFAULT_SPEC
from lms.resolve import lm_spec
from programs.baseline_registry import BASELINE_INPUTS, load_baseline
from programs.factory import BASELINE_NAMES, PROGRAM_NAMES, build_program
from programs.hybrid import HybridNextOccupation
from programs.manifest import MANIFEST_FILE
from programs.next_occupation import NextOccupation
from programs.scoring import predict_batch
from runkit.cli import run_cli
from runkit.config import load_config
from runkit.files import JsonlWriter, read_jsonl, write_config, write_json
from runkit.provenance import write_provenance
from runkit.run_dir import make_run_dir

logger = logging.getLogger(__name__)

ONET_ONLINE = "https://www.onetonline.org/link/summary/{code}"
BAD_LINE_MODES = ("error", "skip")


@dataclass
class PredictConfig:
    """Predict next occupations for a file of career histories (no gold labels needed)."""

    program: str = field(default="two_step", metadata={
        "help": "Program name (frequency, markov, return_markov, two_step, joint, direct, hybrid) or a run directory "
                "(saved program, compile run, distill run, programs.evaluate baseline run)."})
    input: str | None = field(default=None, metadata={"help": "JSONL (one history per line) or long-format CSV file."})
    output_dir: str = field(default="runs/predict", metadata={"help": "Parent folder of prediction run directories."})
    run_name: str | None = field(default=None, metadata={
        "help": "Run directory name (default predict-<timestamp>); re-using a name resumes it."})
    dataset: str | None = field(default=None, metadata={
        "help": "Dataset whose train split fits a supervised baseline or the hybrid's candidates (nlsy79, synthetic, "
                "jsonl:PATH)."})
    lm: Any = field(default=DEFAULT_SPEC, metadata={
        "help": "LM of LM programs: a spec string or a mapping {model, api_base, api_key_env, max_tokens, "
                "temperature, num_retries} (see lms.resolve.lm_spec)."})
    predictor_lm: Any = field(default=None, metadata={"help": "Separate LM of the occupation step (two-model mode)."})
    api_base: str | None = field(default=None, metadata={"help": "API base URL of remote string LM specs."})
    k: int = field(default=5, metadata={"help": "Length of the ranked titles."})
    threads: int = field(default=4, metadata={"help": "Worker threads for LM programs."})
    batch_size: int = field(default=32, metadata={"help": "Histories predicted between two flushes of progress."})
    on_bad_lines: str = field(default="error", metadata={
        "help": "An invalid input line: 'error' stops naming it (file:line), 'skip' reports and counts it."})
    data_dir: str | None = field(default=None, metadata={"help": "Data directory (default: $NEXTOCC_DATA_DIR)."})
    seed: int = field(default=0, metadata={"help": "Seed of the dataset split (baselines)."})
    log_level: str = field(default="INFO", metadata={"help": "Logging level."})

    def __post_init__(self):
        if not self.input:
            raise ValueError("input is required: --input FILE (.jsonl or .csv).")
        if self.on_bad_lines not in BAD_LINE_MODES:
            raise ValueError(f"on_bad_lines must be one of {list(BAD_LINE_MODES)}, got {self.on_bad_lines!r}.")
        for name in ("k", "threads", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")


class BadLine(ValueError):
    """An invalid input record (``where`` is ``file:line``)."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


# ---------------------------------------------------------------------------------------------------- input
def _jsonl_records(path: Path):
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError(f"each line must be a JSON object, got {type(data).__name__}")
                for label in ("next", "target"):  # a gold label is allowed but not used
                    data.pop(label, None)
                yield where, CareerHistory.from_dict(data, record=where), None
            except UnicodeDecodeError as exc:
                yield where, None, f"not valid UTF-8 text (byte {exc.start + 1} of the line)"
            except json.JSONDecodeError as exc:
                yield where, None, f"not valid JSON ({exc.msg} at character {min(exc.pos + 1, len(line.rstrip()))})"
            except (ValueError, RecursionError) as exc:
                yield where, None, str(exc).removeprefix(f"{where}: ")[:300]


def _csv_records(path: Path):
    from pydantic import ValidationError

    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if [c for c in CSV_REQUIRED if c not in header] or [c for c in header if c not in CSV_COLUMNS]:
            raise ValueError(f"{path}: the CSV header must hold {list(CSV_REQUIRED)} and only columns of "
                             f"{list(CSV_COLUMNS)}; found {header}")
        persons: dict[str, dict[str, Any]] = {}
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield f"{path}:{reader.line_num}", None, f"malformed CSV row ({exc})"
                continue
            where = f"{path}:{reader.line_num}"
            pid, kind = _cell(row, "person_id"), (_cell(row, "kind") or "").lower()
            try:
                if None in row:
                    raise ValueError("more cells than header columns")
                if pid is None:
                    raise ValueError("person_id is required")
                entry = persons.setdefault(pid, {"where": where, "jobs": [], "education": []})
                if kind == "job":
                    entry["jobs"].append(Job.model_validate({k: _cell(row, k) for k in JOB_FIELDS}))
                elif kind == "education":
                    entry["education"].append(Education.model_validate({k: _cell(row, k) for k in EDU_FIELDS}))
                elif kind != "next":  # a label row is allowed but not used
                    raise ValueError(f"kind must be 'job', 'education' or 'next', got {row.get('kind')!r}")
            except ValidationError as exc:
                persons.get(pid, {})["bad"] = True
                yield where, None, _entry_errors(exc)
            except ValueError as exc:
                persons.get(pid, {})["bad"] = True
                yield where, None, str(exc)
        for pid, entry in persons.items():
            if entry.get("bad"):  # a history missing one of its rows would be predicted wrongly: skip the person
                logger.warning("skipping person %s (%s): it has an invalid row", pid, entry["where"])
                continue
            try:
                history = CareerHistory.from_dict({"person_id": pid, "jobs": entry["jobs"],
                                                   "education": entry["education"]}, record=entry["where"])
                yield entry["where"], history, None
            except ValueError as exc:
                yield entry["where"], None, str(exc).removeprefix(f"{entry['where']}: ")[:300]


def read_histories(path: str | Path, on_bad_lines: str = "error") -> tuple[list[tuple[str, Any]], list[dict]]:
    """``([(where, CareerHistory), ...], [{"where", "reason"}, ...])`` of a JSONL or CSV input file.

    Raises:
        BadLine: With ``on_bad_lines="error"``, at the first invalid line or duplicate ``person_id``.
        FileNotFoundError / ValueError: A missing file, an unknown extension or a bad CSV header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        records = _jsonl_records(path)
    elif suffix == ".csv":
        records = _csv_records(path)
    else:
        raise ValueError(f"{path}: unknown input format {suffix!r}; use .jsonl (one history per line) or .csv.")
    good, bad, seen = [], [], {}
    for where, history, reason in records:
        if history is not None and history.person_id in seen:
            history, reason = None, f"duplicate person_id {history.person_id!r} (first at {seen[history.person_id]})"
        if history is None:
            if on_bad_lines == "error":
                raise BadLine(where, reason)
            logger.warning("skipping %s: %s", where, reason)
            bad.append({"where": where, "reason": reason})
            continue
        seen[history.person_id] = where
        good.append((where, history))
    return good, bad


# ---------------------------------------------------------------------------------------------------- program
def build_predictor(config: PredictConfig) -> tuple[Any, tuple[str, ...]]:
    """The program and the example fields it reads (see the module docstring for the accepted ``--program``)."""
    path = Path(config.program)
    if path.is_dir():
        if (path / "model.json").is_file() and not (path / "nextocc.json").is_file():
            return load_baseline(path / "model.json"), BASELINE_INPUTS

        kwargs = {}
        if config.predictor_lm is not None:
            kwargs["predictor_lm"] = lm_spec(config.predictor_lm, role="predictor_lm", api_base=config.api_base)
        if config.lm is not None and config.lm != PredictConfig.lm:
            kwargs["lm"] = lm_spec(config.lm, api_base=config.api_base)
        if _manifest_class(path) == HybridNextOccupation.__name__:  # its baseline reads the structured history
            return HybridNextOccupation.load(path, data_dir=config.data_dir, **kwargs), BASELINE_INPUTS
        return NextOccupation.load(path, data_dir=config.data_dir, **kwargs), ("history",)
    if config.program not in PROGRAM_NAMES:
        raise ValueError(f"--program {config.program!r} is neither a run directory nor one of {list(PROGRAM_NAMES)}.")
    trainset = None
    if config.program in BASELINE_NAMES or config.program == "hybrid":
        if not config.dataset:
            raise ValueError(f"--program {config.program} is fitted on a training split: give --dataset (e.g. nlsy79).")
        trainset = list(load_splits(config.dataset, config.data_dir, config.seed).train)
    kwargs: dict[str, Any] = {"k": config.k}
    if config.program not in BASELINE_NAMES:
        kwargs["lm"] = lm_spec(config.lm, api_base=config.api_base)
        if config.predictor_lm is not None:
            kwargs["predictor_lm"] = lm_spec(config.predictor_lm, role="predictor_lm", api_base=config.api_base)
        if config.data_dir:
            kwargs["data_dir"] = config.data_dir
    program = build_program(config.program, trainset=trainset, **kwargs)
    inputs = ("history",) if config.program in ("two_step", "joint", "direct") else BASELINE_INPUTS
    return program, inputs


def _manifest_class(run_dir: Path) -> str | None:
    """The program class a saved run's ``nextocc.json`` names (None without one)."""
    manifest = run_dir / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("class")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{manifest} is not a JSON manifest ({exc}).") from None


def prediction_record(person_id: str, where: str, pred: Any, taxonomy: Any = None) -> dict[str, Any]:
    """The JSON record of one prediction (ranked titles with O*NET codes, scores and O*NET OnLine links)."""
    ranked = []
    for title, score in pred.get("ranked") or []:
        code = None
        if taxonomy is not None:  # a baseline may name a code by its training title: normalize it
            code = taxonomy.code_for_title(title) or taxonomy.normalize(title).code
        ranked.append({"title": title, "onet_code": code, "score": score,
                       "url": ONET_ONLINE.format(code=code) if code else None})
    code = pred.get("onet_code")
    return {"id": person_id, "record": where, "reason": pred.get("reason"), "occupation": pred.get("occupation"),
            "onet_code": code, "url": ONET_ONLINE.format(code=code) if code else None,
            "matched": bool(pred.get("matched")), "ranking": pred.get("ranking") or _ranking_of(pred),
            "ranked": ranked, "error": pred.get("error")}


def _ranking_of(pred: Any) -> str:
    if pred.get("state") is not None or "state" in pred:
        return "baseline_probability"
    return "text"


def _uses_lm(program: Any) -> bool:
    return isinstance(program, NextOccupation)


def _taxonomy(program: Any, config: PredictConfig) -> Any:
    tax = getattr(program, "_taxonomy", None) or getattr(program, "taxonomy", None)
    if tax is not None:
        return tax

    return OnetTaxonomy.load(config.data_dir)


# ---------------------------------------------------------------------------------------------------- run
def run_predict(config: PredictConfig, *, program: Any = None, inputs: tuple[str, ...] | None = None
                ) -> dict[str, Any]:
    """Predicts every history of ``config.input`` into a (resumable) run directory; returns the summary.

    Args:
        config: The configuration.
        program: A ready program instead of ``config.program`` (tests, notebooks).
        inputs: The example fields ``program`` reads (default ``("history",)`` for a ready program).

    Raises:
        BadLine: A bad input line with ``on_bad_lines="error"``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    histories, bad = read_histories(config.input, config.on_bad_lines)
    run_dir = make_run_dir(config.output_dir, config.run_name, prefix="predict", resume=True)
    write_config(run_dir, config)
    out_path = run_dir / "predictions.jsonl"
    done = {str(r.get("id")) for r in read_jsonl(out_path) if not r.get("error")} if out_path.exists() else set()
    todo = [(w, h) for w, h in histories if h.person_id not in done]
    logger.info("%d histories (%d bad lines skipped); %d already predicted, %d to go", len(histories), len(bad),
                len(histories) - len(todo), len(todo))
    if program is None:
        program, inputs = build_predictor(config)
    inputs = inputs or ("history",)
    taxonomy = _taxonomy(program, config)
    threads = config.threads if _uses_lm(program) else 1  # LM-free baselines gain nothing from threads
    t_predict = time.perf_counter()
    counts = {"predicted": 0, "failed": 0}
    methods: dict[str, int] = {}
    with JsonlWriter(out_path) as writer, tqdm(total=len(todo), desc="predict", unit="history") as bar:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start:start + config.batch_size]
            examples = [h.to_example() for _, h in chunk]
            preds = predict_batch(program, examples, threads=threads, inputs=inputs, progress=False)
            for (where, history), pred in zip(chunk, preds, strict=True):
                record = prediction_record(history.person_id, where, pred, taxonomy)
                writer.write(record)
                counts["failed" if record["error"] else "predicted"] += 1
                methods[record["ranking"]] = methods.get(record["ranking"], 0) + 1
            bar.update(len(chunk))
    summary = {
        "input": str(config.input), "run_dir": str(run_dir), "histories": len(histories),
        "already_predicted": len(histories) - len(todo), "predicted": counts["predicted"],
        "failed": counts["failed"], "skipped_bad_lines": len(bad), "bad_lines": bad, "ranking": methods,
        "setup_seconds": round(t_predict - t0, 2), "predict_seconds": round(time.perf_counter() - t_predict, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(run_dir / "summary.json", summary)
    write_provenance(run_dir)  # with the LM heads the loaded models used
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: exit 0 when something was predicted (or everything already was)."""

    def run(config: PredictConfig) -> dict[str, Any]:
        logger.debug("config: %s", asdict(config))
        return run_predict(config)

    def report(summary: dict[str, Any]) -> int:
        for item in summary["bad_lines"]:
            print(f"skipped {item['where']}: {item['reason']}", file=sys.stderr)
        print(f"{summary['predicted']} predicted, {summary['failed']} failed, {summary['already_predicted']} already "
              f"done, {summary['skipped_bad_lines']} bad lines skipped in {summary['seconds']} s (setup "
              f"{summary['setup_seconds']} s, predictions {summary['predict_seconds']} s)")
        print(f"run directory: {summary['run_dir']}")
        usable = summary["predicted"] + summary["already_predicted"]
        return 0 if usable > 0 else 1

    return run_cli(lambda: load_config(PredictConfig, argv, description=PredictConfig.__doc__), run, report)


if __name__ == "__main__":
    sys.exit(main())

