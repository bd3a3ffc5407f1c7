"""Training of :class:`programs.sequence_model.SequenceBaseline`: sequences from examples, batches, early stopping.

A dataset holds one example per transition, and a person's examples are prefixes of one career (``states`` of the
``n``-th example = the first ``n`` jobs, gold = job ``n + 1``). :func:`build_sequences` folds those prefixes back
into one sequence per career with a supervised target at every step an example labels, so a GRU pass over a career
trains all of its transitions at once; an example that is not a prefix of another of its person's examples (with
the same job features) becomes a sequence of its own, so any dataset works.

:func:`train_sequence_model` holds out the persons whose seeded hash (:func:`careers.splits.person_unit`) falls below
``val_fraction`` -- a slice of the *training* split, never dev or test -- trains with Adam and cross-entropy over the
labeled steps, evaluates the held-out loss after every epoch, and keeps the weights of the best epoch (early stopping
after ``patience`` epochs without improvement, or when ``max_minutes`` is spent). Everything random is seeded.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from careers.splits import person_unit

if TYPE_CHECKING:
    from programs.sequence_model import SequenceBaseline

logger = logging.getLogger(__name__)

IGNORE = -100
LOG_EVERY_S = 30.0


@dataclass
class CareerSequence:
    """One career as model inputs: per-step token, education and numeric features, and next-state targets."""

    person: str
    states: list[str]
    tokens: list[int]
    education: list[int]
    numeric: list[list[float]]
    targets: list[int] = field(default_factory=list)


def build_sequences(model: SequenceBaseline, examples: Sequence[Any]) -> list[CareerSequence]:
    """Folds each person's prefix examples into career sequences with a target per labeled step (module doc)."""
    target_index = {s: i for i, s in enumerate(model.target_states)}
    by_person: dict[str, list[Any]] = {}
    for ex in examples:
        by_person.setdefault(str(ex.get("person_id")), []).append(ex)
    out: list[CareerSequence] = []
    for person in sorted(by_person):
        mine: list[CareerSequence] = []
        for ex in sorted(by_person[person], key=lambda e: -len(model._example_states(e))):
            states = [str(s) for s in model._example_states(ex)]
            if not states:
                continue
            tokens, education, numeric = model.encode(states, ex.get("career"))
            gold, n = ex.get("gold_state"), len(states)
            home = next((s for s in mine if s.states[:n] == states and s.numeric[:n] == numeric
                         and s.education[:n] == education
                         and (s.states[n] == gold if len(s.states) > n else s.targets[n - 1] == IGNORE)), None)
            if home is None:
                home = CareerSequence(person, states, tokens, education, numeric, [IGNORE] * n)
                mine.append(home)
            home.targets[n - 1] = target_index[gold]
        out.extend(mine)
    return out


def _batch(seqs: Sequence[CareerSequence]) -> dict[str, torch.Tensor]:
    steps = max(len(s.tokens) for s in seqs)
    pad = [steps - len(s.tokens) for s in seqs]
    return {
        "tokens": torch.tensor([s.tokens + [0] * p for s, p in zip(seqs, pad, strict=True)]),
        "education": torch.tensor([s.education + [0] * p for s, p in zip(seqs, pad, strict=True)]),
        "numeric": torch.tensor([s.numeric + [[0.0] * len(s.numeric[0])] * p for s, p in zip(seqs, pad, strict=True)],
                                dtype=torch.float32),
        "lengths": torch.tensor([len(s.tokens) for s in seqs]),
        "targets": torch.tensor([s.targets + [IGNORE] * p for s, p in zip(seqs, pad, strict=True)]),
    }


def _loss(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy, labeled steps, and top-1 hits of one batch."""
    logits = net(batch["tokens"], batch["education"], batch["numeric"], batch["lengths"])
    targets = batch["targets"]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                             reduction="sum")
    labeled = targets != IGNORE
    hits = int((logits.argmax(-1)[labeled] == targets[labeled]).sum())
    return loss, int(labeled.sum()), hits


def _evaluate(net: torch.nn.Module, seqs: Sequence[CareerSequence], batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy over the labeled steps of ``seqs``."""
    net.eval()
    total, n, hits = 0.0, 0, 0
    with torch.inference_mode():
        for i in range(0, len(seqs), batch_size):
            loss, labeled, h = _loss(net, _batch(seqs[i: i + batch_size]))
            total, n, hits = total + float(loss), n + labeled, hits + h
    return (total / n, hits / n) if n else (math.nan, math.nan)


def train_sequence_model(model: SequenceBaseline, examples: Sequence[Any]) -> None:
    """Builds the vocabularies and network of ``model`` and trains it on ``examples`` (module doc).

    Sets ``model.net`` (best epoch's weights, eval mode) and ``model.train_summary``.

    Raises:
        ValueError: When the examples yield no labeled step.
    """
    cfg = model.config
    threads = cfg.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads or 1)))
    try:
        _train(model, examples)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model: SequenceBaseline, examples: Sequence[Any]) -> None:
    cfg, seed = model.config, model.seed
    t0 = time.perf_counter()
    model.build_vocabularies(examples)
    seqs = build_sequences(model, examples)
    if not seqs:
        raise ValueError("The sequence baseline found no example with past job states to train on.")
    val = [s for s in seqs if person_unit(s.person, seed) < cfg.val_fraction]
    train = [s for s in seqs if person_unit(s.person, seed) >= cfg.val_fraction]
    if not train:  # too few persons to hold any out: train on all, without early stopping
        train, val = val, []
    torch.manual_seed(seed)
    net = model.new_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    n_steps = sum(t != IGNORE for s in train for t in s.targets)
    logger.info("Sequence model: %d train sequences (%d labeled steps), %d validation sequences, %d input states, "
                "%d targets, %d threads", len(train), n_steps, len(val), len(model.input_vocab),
                len(model.target_states), torch.get_num_threads())
    best, best_loss, best_epoch, bad, stopped = None, math.inf, 0, 0, "max_epochs"
    history: list[dict[str, float]] = []
    last_log = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = rng.permutation(len(train))
        total, labeled = 0.0, 0
        for b, i in enumerate(range(0, len(order), cfg.batch_size)):
            loss, n, _ = _loss(net, _batch([train[j] for j in order[i: i + cfg.batch_size]]))
            if n == 0:
                continue
            optimizer.zero_grad()
            (loss / n).backward()
            optimizer.step()
            total, labeled = total + loss.item(), labeled + n
            if time.perf_counter() - last_log >= LOG_EVERY_S:
                logger.info("epoch %d: batch %d/%d, train loss %.4f", epoch, b + 1,
                            math.ceil(len(order) / cfg.batch_size), total / max(labeled, 1))
                last_log = time.perf_counter()
        train_loss = total / max(labeled, 1)
        val_loss, val_acc = _evaluate(net, val, 256) if val else (train_loss, math.nan)
        history.append({"epoch": epoch, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5),
                        "val_acc": round(val_acc, 5) if val else None})
        elapsed = time.perf_counter() - t0
        logger.info("epoch %d/%d: train loss %.4f, validation loss %.4f, validation acc %s (%.0f s)", epoch,
                    cfg.epochs, train_loss, val_loss, f"{val_acc:.4f}" if val else "-", elapsed)
        last_log = time.perf_counter()
        if val_loss < best_loss - 1e-6:
            best, best_loss, best_epoch, bad = copy.deepcopy(net.state_dict()), val_loss, epoch, 0
        else:
            bad += 1
        if val and bad > cfg.patience:
            stopped = "early_stopping"
            break
        if elapsed >= cfg.max_minutes * 60:
            stopped = "max_minutes"
            logger.warning("Sequence model: stopped after epoch %d, the %.1f-minute budget is spent.", epoch,
                           cfg.max_minutes)
            break
    net.load_state_dict(best)
    net.eval()
    model.net = net
    model.train_summary = {
        "train_sequences": len(train), "val_sequences": len(val), "train_steps": int(n_steps),
        "epochs_run": len(history), "best_epoch": best_epoch, "best_val_loss": round(best_loss, 5),
        "best_val_acc": next((h["val_acc"] for h in history if h["epoch"] == best_epoch), None),
        "stopped": stopped, "seconds": round(time.perf_counter() - t0, 2), "threads": torch.get_num_threads(),
        "history": history,
    }
    logger.info("Sequence model trained in %.1f s: best epoch %d (validation loss %.4f), stopped by %s",
                model.train_summary["seconds"], best_epoch, best_loss, stopped)
