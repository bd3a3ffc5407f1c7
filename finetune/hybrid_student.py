"""The hybrid student of ``finetune.distill --mode hybrid``: its baseline file and candidate count.

The student is a LoRA adapter trained on a compile run's ``sft_hybrid_joint.jsonl`` (:mod:`compile.hybrid_export`);
at inference it runs inside :class:`programs.hybrid.HybridNextOccupation` (joint mode) with the same fitted baseline
the traces were exported with. The distill run keeps its own copy of that ``baseline.json`` (and its weights), so
``NextOccupation.load(run_dir)`` restores the whole hybrid program.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from compile.run_reader import compile_config
from programs.hybrid import BASELINE_FILE

logger = logging.getLogger(__name__)

DEFAULT_K_CANDIDATES = 5


def hybrid_source(config: Any) -> tuple[Path, int]:
    """The baseline file and ``k_candidates`` a hybrid distill run uses (``--baseline_file`` or the compile run's).

    Raises:
        FileNotFoundError: When no baseline file exists (naming the flag and the compile setting that writes it).
    """
    k = DEFAULT_K_CANDIDATES
    if config.from_run and (Path(config.from_run) / "config.yaml").is_file():
        k = int(compile_config(config.from_run).hybrid_k_candidates)
    if config.baseline_file:
        path = Path(config.baseline_file)
    elif config.from_run:
        path = Path(config.from_run) / BASELINE_FILE
    else:
        raise FileNotFoundError("mode hybrid needs the fitted baseline of its traces: give --from_run (a compile run "
                                "with hybrid_baseline) or --baseline_file baseline.json.")
    if not path.is_file():
        raise FileNotFoundError(f"Hybrid baseline not found: {path}. Compile with --hybrid_baseline return_markov "
                                "(it writes baseline.json beside sft_hybrid_joint.jsonl) or pass --baseline_file.")
    return path, k


def install_baseline(run_dir: Path, source: Path) -> str:
    """Copies the baseline file into the distill run; returns its name relative to the run.

    A baseline with weights beside its JSON (the GRU's ``baseline.safetensors``) keeps them: every sibling file of
    the same stem is copied under the target's stem.
    """
    source, target = Path(source), Path(run_dir) / BASELINE_FILE
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
        for sibling in sorted(source.parent.glob(f"{source.stem}.*")):
            if sibling.suffix != source.suffix and sibling.is_file():
                shutil.copyfile(sibling, target.with_suffix(sibling.suffix))
    return BASELINE_FILE
