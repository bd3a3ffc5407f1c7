"""Configuration of ``python -m compile.optimize`` (YAML file plus ``--field value`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from lms.model_store import DEFAULT_SPEC
from lms.resolve import lm_spec

OPTIMIZERS = ("none", "bootstrap", "random_search", "mipro", "gepa")
MODES = ("two_step", "joint")
HYBRID_BASELINES = ("frequency", "markov", "return_markov", "sequence")
#: How the hybrid rows' reasons are written (:func:`compile.hybrid_export.export_hybrid_traces`).
HYBRID_REASONS = ("oracle", "ranked")
# which optimizer reads which flag; a non-default value for an optimizer that would ignore it is rejected
# (except under optimizer none, which runs no optimizer at all)
OPTIMIZER_FLAGS = {
    "max_bootstrapped_demos": ("bootstrap", "random_search", "mipro"),
    "max_labeled_demos": ("bootstrap", "random_search", "mipro"),
    "num_candidate_programs": ("random_search", "mipro"),
    "gepa_max_metric_calls": ("gepa",),
}


@dataclass
class OptimizeConfig:
    """Every knob of a compile run. Each field's ``help`` is shown by ``--help``."""

    # data
    dataset: str = field(default="synthetic", metadata={"help": "Dataset spec: nlsy79, synthetic, jsonl:PATH, csv:PATH, jobhop:PATH, ..."})
    data_dir: str | None = field(default=None, metadata={"help": "Data directory (default: $NEXTOCC_DATA_DIR)."})
    n_train: int = field(default=24, metadata={"help": "Training persons/examples used for oracle reasons and optimization."})
    n_dev: int = field(default=16, metadata={"help": "Dev examples for validation of the optimized program."})
    n_test: int = field(default=16, metadata={"help": "Test examples for the final metrics."})
    synthetic_persons: int = field(default=600, metadata={"help": "Persons generated when dataset is synthetic."})
    # program and LMs
    mode: str = field(default="two_step", metadata={"help": "Program mode: two_step or joint (joint adds single-call rows to sft_joint.jsonl)."})
    teacher_lm: str | dict[str, Any] = field(default=DEFAULT_SPEC, metadata={"help": "LM of the teacher that writes candidate reasons: a spec string or a mapping {model, api_base, api_key_env, max_tokens, temperature, num_retries} (YAML, or YAML flow text as a flag); 'evidence' for the LM-free EvidenceTeacher, 'evidence+<lm spec>' to have that LM rewrite the evidence as prose (grounding-checked)."})
    judge_lm: str | dict[str, Any] = field(default=DEFAULT_SPEC, metadata={"help": "LM of the judge: a spec string or a mapping like teacher_lm (e.g. {model: openai/gpt-4.1-mini, api_key_env: OPENAI_API_KEY}); 'heuristic' for the LM-free HeuristicJudge."})
    judge_minority_penalty: int = field(default=0, metadata={"help": "judge_lm: heuristic only: coherence points (0-4) taken off a reason that puts forward a move whose stated share is under half of the commonest move's from the same state ('5% went next to Y. That points to Y next.'); 0 keeps the rule off."})
    judge_likelihood: bool = field(default=False, metadata={"help": "judge_lm: heuristic only: move utility by the gain in the (local) predictor's log-likelihood of the gold with the reason over without it (one forward pass per reason)."})
    predictor_lm: str | dict[str, Any] | None = field(default=None, metadata={"help": "LM spec (string or mapping) of the program's steps (predictor, optimized and evaluated program); default: teacher_lm, or local:gemma-3-270m when the teacher is 'evidence'."})
    student_tokenizer: str | None = field(default=None, metadata={"help": "Evidence teacher: tokenizer that measures the 80-token reason budget: 'embedded' (the embedded Gemma 3 270M), a tokenizer.json path or a Hugging Face model folder; default a length estimate."})
    predict_candidates: bool = field(default=True, metadata={"help": "Run the predictor on every candidate reason (prediction, likelihood utility in candidates.jsonl); false skips these LM calls (fast LM-free candidate phase)."})
    motives: bool = field(default=False, metadata={"help": "Synthetic data only: the latent-motive world (careers.motives) instead of the second-order Markov chain."})
    api_base: str | None = field(default=None, metadata={"help": "Default API base URL of remote teacher/judge string specs (a mapping's own api_base wins)."})
    max_tokens: int = field(default=96, metadata={"help": "Max new tokens per call of the teacher, judge and predictor LMs (where their spec sets none): one budget for the whole reply (all output fields of the step together), sent as the request's max_tokens; a local model also keeps its engine's cap of 128 tokens per free-text field."})
    json_fallback: bool = field(default=False, metadata={"help": "Let DSPy's ChatAdapter retry an unparseable reply with the JSONAdapter (a second request; off: the ChatAdapter's own parse error is reported)."})
    # candidates
    candidates_per_person: int = field(default=4, metadata={"help": "Candidate reasons sampled per training example."})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature for candidate reasons."})
    teacher_statistics: bool = field(default=True, metadata={"help": "Evidence teacher: let reasons cite the training split's transition statistics ('of N recorded moves from X, P% went to Y'); false keeps reasons to facts of the history and O*NET, which a student can read."})
    teacher_moves: bool = field(default=False, metadata={"help": "Evidence teacher: state the kind of the last move (climb, pivot, return, stay...), put the pattern that continues it first and explain the gold by the kind of move it would be (careers.moves)."})
    rationalize: bool = field(default=False, metadata={"help": "Show the teacher the gold occupation (rationalization mode; off as in the paper)."})
    # selection
    threshold_factuality: float = field(default=3, metadata={"help": "Minimum factuality score (1-5) of an oracle reason."})
    threshold_coherence: float = field(default=3, metadata={"help": "Minimum coherence score (1-5) of an oracle reason."})
    threshold_utility: float = field(default=3, metadata={"help": "Minimum utility score (1-5) of an oracle reason."})
    weight_factuality: float = field(default=1.0, metadata={"help": "Weight of factuality in the oracle score."})
    weight_coherence: float = field(default=1.0, metadata={"help": "Weight of coherence in the oracle score."})
    weight_utility: float = field(default=1.0, metadata={"help": "Weight of utility in the oracle score."})
    min_dpo_gap: float = field(default=0.25, metadata={"help": "Minimum oracle-score gap (scores in [0, 1]) between DPO chosen and rejected reasons."})
    # optimizer
    optimizer: str = field(default="bootstrap", metadata={"help": f"Prompt optimizer: one of {', '.join(OPTIMIZERS)}."})
    max_bootstrapped_demos: int = field(default=2, metadata={"help": "Bootstrapped demos per predictor (bootstrap, random_search, mipro)."})
    metric_threshold: float = field(default=0.5, metadata={"help": "Score in [0, 1] (JudgeMetric: mean of AccRM and the judge's oracle score) a bootstrapped trace must reach to become a demo; bootstrap stops at max_bootstrapped_demos passes."})
    max_labeled_demos: int = field(default=2, metadata={"help": "Labeled demos per predictor."})
    num_candidate_programs: int = field(default=4, metadata={"help": "Candidate programs for random_search; for mipro the instruction/demo candidates and the number of trials."})
    gepa_max_metric_calls: int = field(default=60, metadata={"help": "Budget of metric calls for GEPA."})
    eval_judge: bool = field(default=True, metadata={"help": "Judge the reasons of the zero-shot/optimized dev and test predictions (mean judge scores in metrics.json)."})
    # hybrid student traces
    hybrid_baseline: str | None = field(default=None, metadata={"help": "Also export the hybrid student's traces (sft_hybrid_joint.jsonl, baseline.json): the supervised baseline whose candidates the hybrid program shows (frequency, markov, return_markov or sequence); null: no hybrid export."})
    hybrid_k_candidates: int = field(default=5, metadata={"help": "Baseline candidates shown in each hybrid prompt."})
    hybrid_folds: int = field(default=5, metadata={"help": "Person folds for the hybrid traces' candidates: a training person's candidates come from a baseline fitted without their fold."})
    hybrid_reasons: str = field(default="oracle", metadata={"help": "The hybrid rows' reasons: oracle (every oracle example, its oracle reason) or ranked (only examples whose gold is a candidate; the reason opens with the gold's rank among the candidates)."})
    # run
    seed: int = field(default=0, metadata={"help": "Seed for splits, sampling and optimizers."})
    threads: int = field(default=4, metadata={"help": "Threads for DSPy Evaluate/Parallel (local LMs batch concurrent calls)."})
    retries: int = field(default=2, metadata={"help": "Retries (with exponential backoff) of a failing LM/judge call."})
    max_errors: float = field(default=0.5, metadata={"help": "Stop the run (in order, keeping every finished candidate) when more training examples failed than this: a count (>= 1) or a share of the examples (below 1, e.g. 0.5); 0 stops at the first failure."})
    output_dir: str = field(default="runs/compile", metadata={"help": "Parent folder of run directories."})
    run_name: str | None = field(default=None, metadata={"help": "Run directory name; re-using it resumes the run."})

    def __post_init__(self):
        self.teacher_lm = lm_spec(self.teacher_lm, role="teacher_lm")
        self.judge_lm = lm_spec(self.judge_lm, role="judge_lm")
        self.predictor_lm = lm_spec(self.predictor_lm, role="predictor_lm")
        teacher = self.teacher_lm if isinstance(self.teacher_lm, str) else ""
        if isinstance(self.judge_lm, str) and self.judge_lm.startswith("evidence"):
            raise ValueError("judge_lm 'evidence' is not a judge; use 'heuristic' for the LM-free judge or an LM spec.")
        if teacher.startswith("evidence") and teacher != "evidence" and not teacher.startswith("evidence+"):
            raise ValueError(f"teacher_lm {teacher!r}: write 'evidence' or 'evidence+<lm spec>'.")
        if teacher == "heuristic":
            raise ValueError("teacher_lm 'heuristic' is not a teacher; use 'evidence' for the LM-free teacher.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        for name in ("n_train", "candidates_per_person", "threads", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("n_dev", "n_test", "retries", "max_errors"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        defaults = {f.name: f.default for f in fields(self)}
        for name, users in OPTIMIZER_FLAGS.items():
            # optimizer none switches optimization off: its flags stay in the config for the next run
            if self.optimizer not in (*users, "none") and getattr(self, name) != defaults[name]:
                raise ValueError(f"{name}={getattr(self, name)} has no effect with optimizer {self.optimizer!r} (only "
                                 f"{', '.join(users)} read it); remove it or choose one of those optimizers.")
        if self.hybrid_baseline in ("", "none"):
            self.hybrid_baseline = None
        if self.hybrid_baseline is not None and self.hybrid_baseline not in HYBRID_BASELINES:
            raise ValueError(f"hybrid_baseline must be one of {HYBRID_BASELINES} or null, got {self.hybrid_baseline!r}.")
        if self.hybrid_reasons not in HYBRID_REASONS:
            raise ValueError(f"hybrid_reasons must be one of {HYBRID_REASONS}, got {self.hybrid_reasons!r}.")
        if self.hybrid_k_candidates < 1 or self.hybrid_folds < 2:
            raise ValueError(f"hybrid_k_candidates must be >= 1 and hybrid_folds >= 2, got {self.hybrid_k_candidates} "
                             f"and {self.hybrid_folds}.")
        if not 0 <= self.judge_minority_penalty <= 4:
            raise ValueError(f"judge_minority_penalty must be in [0, 4] coherence points, got {self.judge_minority_penalty}.")
        if self.judge_minority_penalty and self.judge_lm != "heuristic":
            raise ValueError("judge_minority_penalty is a rule of the heuristic judge; set judge_lm: heuristic or remove it.")
        if not 0 <= self.metric_threshold <= 1:
            raise ValueError(f"metric_threshold must be in [0, 1] (a JudgeMetric score), got {self.metric_threshold}.")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}.")

    @property
    def evidence_teacher(self) -> bool:
        """Whether the teacher is the LM-free EvidenceTeacher (possibly with a rewrite LM)."""
        return isinstance(self.teacher_lm, str) and (self.teacher_lm == "evidence"
                                                     or self.teacher_lm.startswith("evidence+"))

    @property
    def thresholds(self) -> dict[str, float]:
        return {"factuality": self.threshold_factuality, "coherence": self.threshold_coherence,
                "utility": self.threshold_utility}

    @property
    def weights(self) -> dict[str, float]:
        return {"factuality": self.weight_factuality, "coherence": self.weight_coherence,
                "utility": self.weight_utility}
