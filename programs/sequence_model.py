"""A supervised neural sequence baseline: a GRU over the history's occupation states, tenures, years and education.

:class:`SequenceBaseline` (kind ``sequence``) reads a career as CAREER does with job codes: one step per past job,
each step the job's state key (:attr:`careers.history.Job.state`) embedded, plus numeric features (log tenure, start
year, log gap since the previous job, age at start, each with a missing flag) and the education level held when the
job started (the latest education entry that started by then). A one-layer GRU runs over the steps and, at each step,
a softmax over the training target states scores the next occupation. A learned *return* term adds, per step, one
logit bonus to the person's earlier distinct states and one to the current state (the return-aware Markov chain's
two cues, weighted from the GRU state).

It is a :class:`programs.baselines._StateBaseline`: same ``fit(trainset)``, same prediction fields (``occupation``,
``onet_code``, ``ranked`` with ``k`` titles, ``matched``, ``state``), the same state -> O*NET representative and
titles, and the same masking: the current state is dropped from the ranking exactly when the training split never
repeats a state (``exclude_current``), as in the other baselines. Called with ``states`` only (no ``career``), the
numeric and education features are missing and only the codes inform the prediction; an empty history backs off to
the frequency distribution.

Training (:mod:`programs.sequence_training`) is seeded and uses a validation slice of the *training* persons for
early stopping. Models are saved as JSON (config, vocabularies with the representative O*NET code of every target
state, training summary) plus ``.safetensors`` weights next to it; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import dspy
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from careers.onet import OnetTaxonomy
from programs.baselines import _StateBaseline, job_state
from programs.sequence_training import train_sequence_model

logger = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
NO_EDUCATION = "<none>"
N_NUMERIC = 8


@dataclass
class SequenceConfig:
    """Architecture and training options of the sequence baseline (all settable as ``build_program`` kwargs)."""

    embed_dim: int = 64          # occupation state embedding size
    edu_dim: int = 8             # education level embedding size
    hidden_size: int = 128       # GRU hidden size
    dropout: float = 0.4         # dropout on the GRU outputs (chosen on the training-split validation slice)
    lr: float = 3e-3             # Adam learning rate
    weight_decay: float = 0.0    # Adam weight decay
    batch_size: int = 64         # sequences (persons) per batch
    epochs: int = 30             # most epochs
    patience: int = 3            # epochs without a better validation loss before stopping
    val_fraction: float = 0.1    # share of training persons held out for early stopping (0: none)
    max_minutes: float = 10.0    # wall-clock training budget; training stops after the epoch that exceeds it
    min_count: int = 2           # input states seen fewer times in training map to <unk>
    threads: int | None = None   # torch threads while training (None: the CPUs this process may use)

    def __post_init__(self):
        for name in ("embed_dim", "edu_dim", "hidden_size", "batch_size", "epochs", "min_count"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"sequence option {name} must be a positive integer, got {getattr(self, name)!r}.")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"sequence option patience must be an integer >= 0, got {self.patience!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"sequence option dropout must be in [0, 1), got {self.dropout!r}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"sequence option val_fraction must be in [0, 1), got {self.val_fraction!r}.")
        if not self.lr > 0 or self.weight_decay < 0 or not self.max_minutes > 0:
            raise ValueError("sequence options need lr > 0, weight_decay >= 0 and max_minutes > 0, got "
                             f"lr={self.lr!r}, weight_decay={self.weight_decay!r}, max_minutes={self.max_minutes!r}.")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"sequence option threads must be a positive integer or None, got {self.threads!r}.")


CONFIG_FIELDS = tuple(f.name for f in fields(SequenceConfig))


# ---------------------------------------------------------------------- features
def _year(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def education_at(education: Sequence[Mapping[str, Any]], year: int | None) -> str:
    """The level of the latest education entry started by ``year`` (entries without a start year count)."""
    level = NO_EDUCATION
    for entry in education:
        start = _year(entry.get("start_year"))
        if year is None or start is None or start <= year:
            level = str(entry.get("level") or NO_EDUCATION)
    return level


def numeric_features(job: Mapping[str, Any] | None, previous: Mapping[str, Any] | None) -> list[float]:
    """Log tenure, start year, log gap since the previous job and age, each with a missing flag (8 floats)."""
    job = job or {}
    start, end = _year(job.get("start_year")), _year(job.get("end_year"))
    prev_end = _year((previous or {}).get("end_year"))
    age = job.get("age") if isinstance(job.get("age"), int) else None
    out: list[float] = []
    for value in (
        math.log1p(end - start + 1) if start is not None and end is not None else None,
        (start - 2000) / 20.0 if start is not None else None,
        math.log1p(max(0, start - prev_end)) if start is not None and prev_end is not None else None,
        (age - 30) / 10.0 if age is not None else None,
    ):
        out.extend((0.0, 1.0) if value is None else (float(value), 0.0))
    return out


def career_steps(states: Sequence[str], career: Mapping[str, Any] | None) -> list[tuple[str, str, list[float]]]:
    """One ``(state, education level, numeric features)`` per past job; features are missing without a career."""
    jobs = list((career or {}).get("jobs") or ())
    if jobs and [job_state(j) for j in jobs] == list(states):
        education = list((career or {}).get("education") or ())
        return [(s, education_at(education, _year(j.get("start_year"))),
                 numeric_features(j, jobs[i - 1] if i else None))
                for i, (s, j) in enumerate(zip(states, jobs, strict=True))]
    return [(s, NO_EDUCATION, numeric_features(None, None)) for s in states]


# ---------------------------------------------------------------------- network
class SequenceNet(nn.Module):
    """Embeddings + numeric features -> GRU -> logits over target states, plus the learned return term."""

    def __init__(self, n_inputs: int, n_education: int, n_targets: int, config: SequenceConfig,
                 input_to_target: Sequence[int]):
        super().__init__()
        self.n_targets = n_targets
        self.state_embedding = nn.Embedding(n_inputs, config.embed_dim, padding_idx=0)
        self.education_embedding = nn.Embedding(n_education, config.edu_dim)
        self.gru = nn.GRU(config.embed_dim + config.edu_dim + N_NUMERIC, config.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden_size, n_targets)
        self.return_gate = nn.Linear(config.hidden_size, 2)
        # input state id -> target id (n_targets for inputs that are never a target); a buffer, saved with the weights
        self.register_buffer("input_to_target", torch.tensor(list(input_to_target), dtype=torch.long))

    def forward(self, tokens: torch.Tensor, education: torch.Tensor, numeric: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, steps, n_targets]`` for the next state after every step."""
        x = torch.cat([self.state_embedding(tokens), self.education_embedding(education), numeric], dim=-1)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = self.gru(packed)
        hidden, _ = pad_packed_sequence(hidden, batch_first=True, total_length=tokens.shape[1])
        hidden = self.dropout(hidden)
        current = nn.functional.one_hot(self.input_to_target[tokens], self.n_targets + 1)[..., : self.n_targets]
        current = current.to(hidden.dtype)
        earlier = ((current.cumsum(dim=1) - current) > 0).to(hidden.dtype) * (1.0 - current)
        gate = self.return_gate(hidden)
        return self.out(hidden) + gate[..., :1] * earlier + gate[..., 1:] * current


# ---------------------------------------------------------------------- the baseline
class SequenceBaseline(_StateBaseline):
    """GRU next-occupation model over past job states (module doc).

    Args:
        k: Length of the ranked list returned in ``pred.ranked``.
        alpha: Add-alpha pseudo-count of the frequency back-off (empty histories).
        taxonomy: Optional taxonomy for official titles.
        seed: Seeds weight initialization, batch order and the validation slice.
        cache_dir: When set, a fitted model is saved there under a key of (training data, config, seed) and a later
            ``fit`` on the same data and options loads it instead of training again.
        **options: :class:`SequenceConfig` fields (``hidden_size``, ``epochs``, ``lr``, ``dropout``, ``max_minutes``...).

    Raises:
        ValueError: For an unknown or invalid option (the message names it).
    """

    kind = "sequence"

    def __init__(self, k: int = 10, alpha: float = 0.1, taxonomy: OnetTaxonomy | None = None, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, **options: Any):
        super().__init__(k=k, alpha=alpha, taxonomy=taxonomy)
        unknown = sorted(set(options) - set(CONFIG_FIELDS))
        if unknown:
            raise ValueError(f"Unknown sequence option(s) {unknown}; known: {list(CONFIG_FIELDS)}.")
        self.config = SequenceConfig(**options)
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.input_vocab: list[str] = []
        self.education_vocab: list[str] = []
        self.target_states: list[str] = []
        self.train_summary: dict[str, Any] = {}
        self.net: SequenceNet | None = None
        self._input_index: dict[str, int] = {}
        self._education_index: dict[str, int] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, trainset: Sequence[dspy.Example]) -> SequenceBaseline:
        """Fits on labeled examples (``states``/``career``, ``gold_state``, ``onet_code``), or loads a cached fit."""
        trainset = list(trainset)
        self._train_examples = trainset
        cached = self._cache_path(trainset)
        if cached is not None and cached.is_file():
            logger.info("Loading the cached sequence model %s", cached)
            return self.load(cached)
        try:
            super().fit(trainset)
        finally:
            self._train_examples = None
        if cached is not None:
            self.save(cached)
        return self

    def _fit_rows(self, rows: list[tuple[list[str], str]]) -> None:
        train_sequence_model(self, [ex for ex in self._train_examples if ex.get("gold_state")])

    def build_vocabularies(self, examples: Sequence[Any]) -> None:
        """Input states (count >= ``min_count``), education levels and target states of the training examples."""
        counts: dict[str, int] = {}
        levels: set[str] = set()
        for ex in examples:
            states = self._example_states(ex)
            for state, level, _ in career_steps(states, ex.get("career")):
                counts[state] = counts.get(state, 0) + 1
                levels.add(level)
            counts[ex.get("gold_state")] = counts.get(ex.get("gold_state"), 0) + 1
        self.input_vocab = [PAD, UNK] + sorted(s for s, c in counts.items() if c >= self.config.min_count)
        self.education_vocab = [NO_EDUCATION] + sorted(levels - {NO_EDUCATION})
        self.target_states = sorted(self.state_counts)
        self._index_vocabularies()

    def _index_vocabularies(self) -> None:
        self._input_index = {s: i for i, s in enumerate(self.input_vocab)}
        self._education_index = {s: i for i, s in enumerate(self.education_vocab)}

    def new_net(self) -> SequenceNet:
        """An untrained network sized for the current vocabularies."""
        target_index = {s: i for i, s in enumerate(self.target_states)}
        mapping = [target_index.get(s, len(self.target_states)) for s in self.input_vocab]
        return SequenceNet(len(self.input_vocab), len(self.education_vocab), len(self.target_states), self.config,
                           mapping)

    def encode(self, states: Sequence[str], career: Mapping[str, Any] | None) -> tuple[list[int], list[int],
                                                                                          list[list[float]]]:
        """Token ids, education ids and numeric features of one history (unknown values map to <unk>/<none>)."""
        steps = career_steps(states, career)
        return ([self._input_index.get(s, 1) for s, _, _ in steps],
                [self._education_index.get(level, 0) for _, level, _ in steps],
                [num for _, _, num in steps])

    # ------------------------------------------------------------------ scoring
    def distribution(self, states: Sequence[str], career: Mapping[str, Any] | None = None) -> dict[str, float]:
        """P(next state | history) over the training target states (the frequency law for an empty history)."""
        if not states or self.net is None:
            return self.frequency_distribution()
        tokens, education, numeric = self.encode(states, career)
        self.net.eval()
        with torch.inference_mode():
            logits = self.net(torch.tensor([tokens]), torch.tensor([education]),
                              torch.tensor([numeric], dtype=torch.float32), torch.tensor([len(tokens)]))
            probs = torch.softmax(logits[0, -1].double(), dim=-1).tolist()
        return dict(zip(self.target_states, probs, strict=True))

    def forward(self, history: str | None = None, states: Sequence[str] | None = None,
                career: Mapping[str, Any] | None = None, **kwargs: Any) -> dspy.Prediction:
        """Predicts the next occupation; same arguments, fields and errors as the other baselines' ``forward``."""
        states = self._past_states(states, career)
        dist = self.distribution(states, career)
        if self.exclude_current and states:
            dist.pop(states[-1], None)
        return self._prediction(sorted(dist.items(), key=lambda kv: (-kv[1], kv[0])))

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def weights_path(path: str | os.PathLike) -> Path:
        """The ``.safetensors`` file that goes with a saved JSON config (``model.json`` -> ``model.safetensors``)."""
        return Path(path).with_suffix(".safetensors")

    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha, "seed": self.seed, "config": asdict(self.config)}

    def _model_state(self) -> dict[str, Any]:
        return {"input_vocab": self.input_vocab, "education_vocab": self.education_vocab,
                "target_states": self.target_states,
                "target_codes": [self.code_of(s) for s in self.target_states],
                "training": self.train_summary, "weights": self._weights_name, "weights_sha256": self._weights_sha256}

    def save(self, path: str | os.PathLike, **_: Any) -> Path:
        """Writes the JSON config to ``path`` and the weights to :meth:`weights_path` (safetensors).

        Raises:
            RuntimeError: When the model is not fitted.
        """
        from safetensors.torch import save_file

        if self.net is None:
            raise RuntimeError("SequenceBaseline.save: the model is not fitted.")
        weights = self.weights_path(path)
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_name(weights.name + ".tmp")
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp))
        os.replace(tmp, weights)
        self._weights_name = weights.name
        self._weights_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
        return super().save(path)

    def load(self, path: str | os.PathLike, **_: Any) -> SequenceBaseline:
        """Restores a model written by :meth:`save` (the JSON at ``path``, the weights beside it).

        Raises:
            ValueError: For another kind or version, or weights that do not match the JSON's checksum.
            FileNotFoundError: When the weights file is missing.
        """
        self._load_dir = Path(path).parent
        return super().load(path)

    def _load_model_state(self, data: dict[str, Any]) -> None:
        from safetensors.torch import load_file

        self.config = SequenceConfig(**self.config) if isinstance(self.config, dict) else self.config
        self.input_vocab = list(data["input_vocab"])
        self.education_vocab = list(data["education_vocab"])
        self.target_states = list(data["target_states"])
        self.train_summary = dict(data.get("training") or {})
        self._index_vocabularies()
        weights = self._load_dir / data["weights"]
        if not weights.is_file():
            raise FileNotFoundError(f"Sequence model weights {weights} are missing (saved beside the JSON config).")
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if data.get("weights_sha256") and digest != data["weights_sha256"]:
            raise ValueError(f"{weights} does not match its JSON config (sha256 differs): re-save the model.")
        self._weights_name, self._weights_sha256 = data["weights"], digest
        self.net = self.new_net()
        self.net.load_state_dict(load_file(str(weights)))
        self.net.eval()

    def _cache_path(self, trainset: Sequence[Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256()
        digest.update(json.dumps({"config": asdict(self.config), "seed": self.seed, "alpha": self.alpha},
                                 sort_keys=True).encode())
        for ex in trainset:
            digest.update(json.dumps([ex.get("person_id"), list(self._example_states(ex)), ex.get("gold_state"),
                                      ex.get("onet_code"), ex.get("occupation"), ex.get("career")],
                                     sort_keys=True, default=str).encode())
        return self.cache_dir / f"sequence-{digest.hexdigest()[:16]}.json"
