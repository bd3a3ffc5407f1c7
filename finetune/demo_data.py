"""A small synthetic distillation dataset exported with :func:`compile.export.export_traces` (demo and benchmark).

Career ladders give each person a short history and a rule-based next occupation; the "oracle" reason is a
template that names the trajectory. Rows are formatted by DSPy's ChatAdapter for the project's signatures, exactly
like a real compile run, so token lengths and prompt layout match real distillation data.

``python -m finetune.demo_data runs/demo_compile [N]`` writes the files for ``configs/distill_demo.yaml``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from careers.datasets import load_dataset
from compile.export import export_traces
from signatures import GenerateReason, PredictOccupation, ReasonAndPredict

logger = logging.getLogger(__name__)

LADDERS = [
    ["Cashiers", "Retail Salespersons", "First-Line Supervisors of Retail Sales Workers", "Sales Managers"],
    ["Nursing Assistants", "Licensed Practical and Licensed Vocational Nurses", "Registered Nurses",
     "Medical and Health Services Managers"],
    ["Cooks, Fast Food", "Cooks, Restaurant", "Chefs and Head Cooks", "Food Service Managers"],
    ["Helpers--Carpenters", "Carpenters", "First-Line Supervisors of Construction Trades and Extraction Workers",
     "Construction Managers"],
    ["Office Clerks, General", "Bookkeeping, Accounting, and Auditing Clerks", "Accountants and Auditors",
     "Financial Managers"],
    ["Teaching Assistants, Except Postsecondary", "Elementary School Teachers, Except Special Education",
     "Instructional Coordinators", "Education Administrators, Kindergarten through Secondary"],
    ["Laborers and Freight, Stock, and Material Movers, Hand", "Light Truck Drivers", "Heavy and Tractor-Trailer Truck Drivers",
     "Transportation, Storage, and Distribution Managers"],
    ["Computer User Support Specialists", "Computer Network Support Specialists", "Network and Computer Systems Administrators",
     "Computer and Information Systems Managers"],
]


def synthetic_oracles(n: int = 48, seed: int = 0) -> dict[str, dict]:
    """``n`` oracle records (``history``, ``reason``, ``gold_occupation``) in the layout of the compile stage."""
    rng = random.Random(seed)
    oracles = {}
    for i in range(n):
        ladder = LADDERS[i % len(LADDERS)]
        length = rng.randint(1, len(ladder) - 1)
        year = rng.randint(1995, 2012)
        lines = []
        for job in ladder[:length]:
            span = rng.randint(1, 5)
            lines.append(f"- {job} ({year}-{year + span})")
            year += span
        history = f"Person {i}, born {rng.randint(1957, 1964)}.\nJobs:\n" + "\n".join(lines)
        current, nxt = ladder[length - 1], ladder[length]
        reason = (f"The person has worked as {current} after {length - 1} earlier step(s) on the same ladder, "
                  f"gaining experience and seniority; they prefer staying in the field and moving up, so the "
                  f"natural next step is a more senior role in the same field.")
        oracles[f"p{i}"] = {"history": history, "reason": reason, "gold_occupation": nxt}
    return oracles


def _reason_for(career: dict) -> str:
    jobs = career.get("jobs") or []
    if not jobs:
        return "The history lists no jobs yet, so the person is likely to start in an entry-level role."
    last = jobs[-1]
    titles = [j.get("title") for j in jobs if j.get("title")]
    moves = "stayed in similar work" if len(set(titles)) <= 2 else "moved between several kinds of work"
    return (f"The person has held {len(jobs)} job(s) and {moves}; the most recent is {last.get('title')} "
            f"({last.get('start_year')}-{last.get('end_year')}). Their experience builds on these roles, so the "
            "next step is likely related work at a similar or slightly higher level.")


DEMO_PERSONS = 600


def dataset_oracles(dataset: str, data_dir: str | None, n: int, seed: int = 0) -> dict[str, dict]:
    """Oracle records from the train split of a :mod:`careers.datasets` dataset (template reasons)."""
    import ast

    splits = load_dataset(dataset, data_dir, seed, **({"n_persons": DEMO_PERSONS} if dataset == "synthetic" else {}))
    oracles = {}
    for i, ex in enumerate(list(splits.train)[:n]):
        career = ex.get("career")
        career = ast.literal_eval(career) if isinstance(career, str) else (career or {})
        oracles[f"{ex.get('person_id')}#{i}"] = {"history": ex["history"], "reason": _reason_for(career),
                                             "gold_occupation": ex["occupation"]}
    return oracles


def export_demo_run(out_dir: str | Path, n: int = 48, seed: int = 0, dataset: str | None = "synthetic",
                    data_dir: str | None = None, n_test: int = 8) -> dict[str, int]:
    """Write ``sft_reason/predict/joint.jsonl`` and ``dpo_reason.jsonl`` for ``n`` persons.

    With ``dataset`` (default: the project's synthetic careers), the oracles come from its train split and a
    ``config.yaml`` naming the dataset is written so the student can be evaluated on its test split (first
    ``n_test`` examples); when the dataset cannot be loaded, built-in career ladders are used instead.

    Returns:
        Row counts per file.
    """
    import dspy
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    oracles = None
    if dataset:
        try:
            oracles = dataset_oracles(dataset, data_dir, n, seed)
            # an OptimizeConfig-compatible config, so finetune.evaluate_student finds the run's test examples
            config = {"dataset": dataset, "data_dir": data_dir, "seed": seed, "mode": "two_step",
                      "synthetic_persons": DEMO_PERSONS, "n_train": n, "n_dev": n_test, "n_test": n_test}
            (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - fall back to the built-in ladders
            logger.warning("Dataset %r unavailable (%s); using built-in career ladders", dataset, exc)
    oracles = oracles or synthetic_oracles(n, seed)
    records = list(oracles.values())
    pairs = []
    for i, rec in enumerate(records[: n // 2]):
        other = records[(i + 1) % len(records)]
        bad = dict(rec, reason=f"The person will likely become {other['gold_occupation']} for no clear reason.")
        pairs.append((rec, bad))
    steps = {"reason": dspy.Predict(GenerateReason), "predict": dspy.Predict(PredictOccupation),
             "joint": dspy.Predict(ReasonAndPredict)}
    return export_traces(out, oracles, pairs, steps, joint=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m finetune.demo_data [OUT_DIR] [N] [DATA_DIR]`` (or ``--out_dir/--n/--data_dir``); ``--help`` helps."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m finetune.demo_data",
                                     description="Write a demo compile run (SFT/DPO files) for finetune.distill.")
    parser.add_argument("out_dir_pos", nargs="?", metavar="OUT_DIR", help="Output folder (default runs/demo_compile).")
    parser.add_argument("n_pos", nargs="?", type=int, metavar="N", help="Persons (default 48).")
    parser.add_argument("data_dir_pos", nargs="?", metavar="DATA_DIR", help="Data directory (default: env).")
    parser.add_argument("--out_dir", default=None, help="Output folder (same as OUT_DIR).")
    parser.add_argument("--n", type=int, default=None, help="Persons (same as N).")
    parser.add_argument("--data_dir", default=None, help="Data directory (same as DATA_DIR).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the persons.")
    args = parser.parse_args(argv)
    target = args.out_dir or args.out_dir_pos or "runs/demo_compile"
    if target.startswith("-"):
        parser.error(f"OUT_DIR {target!r} looks like a flag; give a folder name")
    n = args.n or args.n_pos or 48
    if n < 2:
        parser.error("N must be >= 2")
    counts = export_demo_run(target, n=n, seed=args.seed, data_dir=args.data_dir or args.data_dir_pos)
    print(f"{target}: {counts}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
