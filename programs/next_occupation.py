"""The reasoned next-occupation program: reason generation, then an O*NET title, normalized and ranked.

:class:`NextOccupation` runs one of three modes:

* ``"two_step"`` (default): a reasoner (:class:`signatures.GenerateReason`) writes the person's preferences and
  trajectory, then a predictor (:class:`signatures.PredictOccupation`) reads history + reason and names the next
  occupation. The two steps may use different LMs (two-model mode).
* ``"joint"``: one call (:class:`signatures.ReasonAndPredict`) writes the reason and the occupation.
* ``"direct"``: the ablation without a reason (:class:`signatures.PredictDirect`).

Every occupation answer passes through the O*NET normalizer (:meth:`careers.onet.OnetTaxonomy.normalize`). An
answer that matches no official title is kept as text (``occupation`` = the raw answer, ``onet_code=None``,
``matched=False``), logged, and scored as a miss by :mod:`metrics.accuracy`; it is never silently replaced.

``ranked`` (top-``k`` ``(title, score)``) comes from the local engine's option ranking (:func:`lms.rank_options`,
log-probabilities; a beam over the titles by default, or exact) when the predictor's LM is local and constrained,
and otherwise from normalizing the text answer (:meth:`~careers.onet.OnetTaxonomy.candidates`, similarity / 100).

Three-line use::

    from programs import NextOccupation
    prog = NextOccupation.from_pretrained("local:gemma-3-270m")
    pred = prog({"person_id": "1", "jobs": [{"title": "Cashier", "start_year": 2015, "end_year": 2018}]})

LMs are applied per call with ``dspy.context(lm=...)`` (never ``dspy.configure``), so a program is safe to run in
DSPy's worker threads; a step without its own LM uses the LM configured in DSPy's settings.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import dspy

import lms
from careers.history import CareerHistory, coerce_history
from careers.onet import Match, OnetTaxonomy
from lms.model_store import DEFAULT_SPEC, is_local_spec
from lms.resolve import lm_model, resolve_lm, spec_string
from programs.manifest import (
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    PROGRAM_FILE,
    ClassOrInstanceMethod,
    adapter_specs,
    run_manifest,
    safe_child,
)
from programs.serving import STYLES, is_served, request_config
from signatures import GenerateReason, PredictDirect, PredictOccupation, ReasonAndPredict

logger = logging.getLogger(__name__)

MODES = ("two_step", "joint", "direct")


def _lm_context(lm: dspy.BaseLM | None):
    return dspy.context(lm=lm) if lm is not None else contextlib.nullcontext()


_CONSTRAINED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # DSPy's configured local LM -> titled copy
_CONSTRAINED_LOCK = threading.Lock()


def _with_titles(lm: Any, taxonomy: OnetTaxonomy) -> Any:
    """``lm`` with its occupation field constrained to the O*NET titles when it is a local LM (one copy per LM)."""
    if lm is None or not lms.is_local(lm):
        return lm
    with _CONSTRAINED_LOCK:
        known = _CONSTRAINED.get(lm)
        if known is None or known[0] is not taxonomy:
            constrained = lms.constrain(lm, {"occupation": taxonomy.titles})
            if constrained is not lm:
                logger.info("Constraining the occupation field of %s to the %d O*NET titles", lm.model,
                            len(taxonomy.titles))
            known = _CONSTRAINED[lm] = (taxonomy, None if constrained is lm else constrained)  # no ref to the key
        return known[1] or lm


# ---------------------------------------------------------------------------------------------------- program
class NextOccupation(dspy.Module):
    """Reasoned next-occupation prediction (two-step, joint or direct) with O*NET normalization.

    Args:
        mode: ``"two_step"``, ``"joint"`` or ``"direct"``.
        lm: LM (or spec string) for every step; None uses DSPy's configured LM.
        reasoner_lm: LM for the reason step (two-step mode); overrides ``lm``.
        predictor_lm: LM for the occupation step; overrides ``lm``.
        taxonomy: The O*NET taxonomy; loaded lazily from ``data_dir`` when None.
        data_dir: Data directory of the taxonomy (None: ``NEXTOCC_DATA_DIR`` or the cache dir).
        k: Length of ``ranked``.
        top1: Where ``occupation`` comes from: ``"answer"`` (default), the LM's generated text, normalized; or
            ``"ranked"``, the best option of the local engine's ranking when it is available (with the engine's
            default ``choice_decoding='ranked'`` both agree; with greedy decoding they can differ). Falls back to the
            answer.
        server_constraint: The occupation constraint sent to a served ``hosted_vllm/...`` predictor
            (:mod:`programs.serving`): ``"auto"`` (vLLM ``structured_outputs``), ``"guided_choice"`` (older vLLM),
            ``"structured_outputs"`` or ``"off"``.
    """

    SHARED_ATTRS = ("reasoner_lm", "predictor_lm", "_taxonomy", "baseline")

    def __init__(
        self,
        mode: str = "two_step",
        *,
        lm: Any = None,
        reasoner_lm: Any = None,
        predictor_lm: Any = None,
        taxonomy: OnetTaxonomy | None = None,
        data_dir: str | os.PathLike | None = None,
        k: int = 5,
        top1: str = "answer",
        server_constraint: str = "auto",
    ):
        super().__init__()
        if server_constraint not in STYLES:
            raise ValueError(f"server_constraint must be one of {STYLES}, got {server_constraint!r}")
        self.server_constraint = server_constraint
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if top1 not in ("answer", "ranked"):
            raise ValueError(f"top1 must be 'answer' or 'ranked', got {top1!r}")
        self.mode = mode
        self.k = k
        self.top1 = top1
        self.data_dir = str(data_dir) if data_dir is not None else None
        self._taxonomy = taxonomy
        reasoner_spec = reasoner_lm if reasoner_lm is not None else lm
        predictor_spec = predictor_lm if predictor_lm is not None else lm
        self.lm_specs = {"reasoner": spec_string(reasoner_spec), "predictor": spec_string(predictor_spec)}
        self.reasoner_lm = self._resolve_step_lm(reasoner_spec)
        same = (isinstance(predictor_spec, str) and predictor_spec == reasoner_spec) or predictor_spec is reasoner_spec
        self.predictor_lm = self.reasoner_lm if same else self._resolve_step_lm(predictor_spec)
        self._build_predictors()

    def _resolve_step_lm(self, spec: Any) -> dspy.BaseLM | None:
        # A local spec gets its occupation output constrained to the official titles, ranked as deep as ``k``.
        if isinstance(spec, (str, dict)) and is_local_spec(lm_model(spec)):
            return resolve_lm(spec, constrained_fields={"occupation": self.taxonomy.titles}, rank_k=self.k)
        return _with_titles(resolve_lm(spec), self.taxonomy)

    def _occupation_lm(self) -> dspy.BaseLM | None:
        """The occupation step's LM: its own, else DSPy's configured one (a local one constrained to the titles)."""
        return self.predictor_lm if self.predictor_lm is not None else self._configured_lm()

    def _configured_lm(self) -> dspy.BaseLM | None:
        return _with_titles(dspy.settings.lm, self.taxonomy)

    def _build_predictors(self) -> None:
        if self.mode == "two_step":
            self.reasoner = dspy.Predict(GenerateReason)
            self.predictor = dspy.Predict(PredictOccupation)
        elif self.mode == "joint":
            self.predictor = dspy.Predict(ReasonAndPredict)
        else:
            self.predictor = dspy.Predict(PredictDirect)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        spec: Any = DEFAULT_SPEC,
        *,
        predictor: Any = None,
        taxonomy: OnetTaxonomy | None = None,
        data_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> NextOccupation:
        """Builds a program on a model spec; local specs get their occupation output constrained to the titles.

        Args:
            spec: LM spec (or LM) for every step, e.g. ``"local:gemma-3-270m"`` or ``"openai/gpt-4.1-mini"``.
            predictor: Optional different LM spec for the occupation step (two-model mode).
            taxonomy: The taxonomy (loaded from ``data_dir`` when None).
            data_dir: Data directory of the taxonomy.
            **kwargs: Other :class:`NextOccupation` arguments (``mode``, ``k``).
        """
        return cls(lm=spec, predictor_lm=predictor, taxonomy=taxonomy, data_dir=data_dir, **kwargs)

    @property
    def taxonomy(self) -> OnetTaxonomy:
        """The O*NET taxonomy (loaded on first use)."""
        if self._taxonomy is None:
            self._taxonomy = OnetTaxonomy.load(self.data_dir)
        return self._taxonomy

    def __deepcopy__(self, memo):
        # Optimizers deep-copy programs; LMs (possibly holding model weights), the taxonomy and a fitted baseline
        # are shared, everything else (the predictors and their demos/instructions) is copied.
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key in self.SHARED_ATTRS else copy.deepcopy(value, memo)
        return new

    # ------------------------------------------------------------------ running
    def extra_inputs(self, history_text: str, parsed: CareerHistory | None, original: Any, **kwargs: Any) -> dict:
        """Additional input fields of every step (none here; the hybrid program adds ``candidates``)."""
        return {}

    def forward(self, history: Any, **kwargs: Any) -> dspy.Prediction:
        """Predicts the next occupation.

        Args:
            history: A dict, JSON string, :class:`~careers.history.CareerHistory` or rendered history text.
            **kwargs: Extra inputs for subclasses (e.g. ``candidates`` for the hybrid program).

        Returns:
            ``dspy.Prediction(reason, occupation, onet_code, ranked, matched, raw_occupation, method)``; ``reason``
            is None in direct mode.
        """
        text, career = coerce_history(history)
        extra = self.extra_inputs(text, career, history, **kwargs)
        reason = None
        if self.mode == "two_step":
            with _lm_context(self.reasoner_lm if self.reasoner_lm is not None else self._configured_lm()):
                reason = self.reasoner(history=text, **extra).reason
            inputs = {"history": text, **extra, "reason": reason}
            with _lm_context(self._occupation_lm()):
                out = self.predictor(**inputs, **self._server_config())
            prefix = None
        else:
            inputs = {"history": text, **extra}
            with _lm_context(self._occupation_lm()):
                out = self.predictor(**inputs, **self._server_config())
            if self.mode == "joint":
                reason = out.reason
            prefix = {"reason": reason} if self.mode == "joint" else None
        pred = self._finish(out.occupation, inputs, prefix)
        pred.reason = reason
        for key, value in extra.items():
            pred[key] = value
        return pred

    def _server_config(self) -> dict[str, Any]:
        """``{"config": {"extra_body": ...}}`` constraining a served predictor's occupation to the titles, else {}."""
        lm = self._occupation_lm()
        if self.server_constraint == "off" or not is_served(lm):
            return {}
        cfg = request_config(lm, self.predictor.signature, self.taxonomy.titles, self.server_constraint)
        return {"config": cfg} if cfg else {}

    def _finish(self, raw: Any, inputs: dict, prefix: dict | None) -> dspy.Prediction:
        raw = "" if raw is None else str(raw).strip()
        match = self.taxonomy.normalize(raw) if raw else Match(None, None, 0.0, "none", raw)
        if match.matched:
            occupation, code = match.title, match.code
        else:
            occupation, code = raw, None
        local = self._rank_local(inputs, prefix)
        matched, method = match.matched, match.method
        if local and self.top1 == "ranked" and self.taxonomy.code_for_title(local[0][0]):
            occupation, code, matched, method = local[0][0], self.taxonomy.code_for_title(local[0][0]), True, "ranked"
        elif not match.matched:
            logger.warning("Occupation answer %r matches no O*NET-SOC 2019 title; kept as text (scored as a miss).",
                           raw)
        lm = self._occupation_lm()
        constraint = "local" if lms.is_local(lm) else "server" if self._server_config() else "none"
        return dspy.Prediction(occupation=occupation, onet_code=code, ranked=local or self._rank_text(raw),
                               matched=matched, raw_occupation=raw, method=method,
                               ranking="exact" if local else "text", constraint=constraint)

    def _rank_text(self, raw: str) -> list[tuple[str, float]]:
        if not raw:
            return []
        return [(m.title, round(m.score / 100.0, 4)) for m in self.taxonomy.candidates(raw, self.k)]

    def _rank_local(self, inputs: dict, prefix: dict | None) -> list[tuple[str, float]]:
        """Exact top-k ranking of the titles by the predictor's local LM; [] when not local or not constrained."""
        lm = self._occupation_lm()
        if not lms.is_local(lm):
            return []
        try:
            ranked = lms.rank_options(lm, self._predictor_messages(inputs), "occupation", self.k, prefix_fields=prefix)
        except Exception as exc:  # noqa: BLE001 - ranking is an extra; fall back to the text answer
            logger.warning("Local option ranking failed (%s); ranking by the normalized text answer.", exc)
            return []
        out = []
        for option, logprob in ranked:
            code = self.taxonomy.code_for_title(option)
            out.append((self.taxonomy.title(code) if code else option, float(logprob)))
        return out

    def _predictor_messages(self, inputs: dict) -> list[dict]:
        """The ChatAdapter messages of the occupation step for ``inputs`` (what the engine ranks after)."""
        return dspy.ChatAdapter().format(self.predictor.signature, self.predictor.demos, inputs)

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, Any]:
        """The ``nextocc.json`` manifest: class, mode, LM specs, k, data_dir and the state file name."""
        return {
            "format": MANIFEST_FORMAT,
            "class": type(self).__name__,
            "mode": self.mode,
            "lms": dict(self.lm_specs),
            "k": self.k,
            "top1": self.top1,
            "server_constraint": self.server_constraint,
            "data_dir": self.data_dir,
            "program": PROGRAM_FILE,
        }

    def save(self, path: str | os.PathLike, save_program: bool = False, modules_to_serialize=None) -> None:
        """Saves to a run directory: ``program.json`` (DSPy JSON state, no pickle) plus ``nextocc.json``.

        A path ending in ``.json``/``.pkl`` (or ``save_program=True``) falls through to :meth:`dspy.Module.save`.
        """
        path = Path(path)
        if save_program or path.suffix in (".json", ".pkl"):
            return super().save(path, save_program=save_program, modules_to_serialize=modules_to_serialize)
        path.mkdir(parents=True, exist_ok=True)
        super().save(path / PROGRAM_FILE)
        (path / MANIFEST_FILE).write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")
        logger.info("Saved %s to %s", type(self).__name__, path)

    @classmethod
    def _from_manifest(cls, manifest: dict, *, run_dir: Path | None = None, **kwargs: Any) -> NextOccupation:
        """Builds the (untrained) program a manifest describes; ``run_dir`` is for subclasses' extra files."""
        return cls(**cls._manifest_options(manifest), **kwargs)

    @classmethod
    def _manifest_options(cls, manifest: dict) -> dict[str, Any]:
        return {"mode": manifest.get("mode", "two_step"), "k": int(manifest.get("k", 5)),
                "top1": manifest.get("top1", "answer"), "server_constraint": manifest.get("server_constraint", "auto")}

    @classmethod
    def _load_run_dir(
        cls,
        run_dir: str | os.PathLike,
        *,
        lm: Any = None,
        reasoner_lm: Any = None,
        predictor_lm: Any = None,
        taxonomy: OnetTaxonomy | None = None,
        data_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> NextOccupation:
        """Restores a program saved with :meth:`save`.

        LMs given here override the manifest's specs; otherwise each spec is resolved (a step whose spec is unknown
        uses DSPy's configured LM). ``data_dir`` overrides the manifest's; a manifest ``data_dir`` is used only when
        it is an existing absolute directory.

        ``run_dir`` may also be a ``compile.optimize`` run (the optimized program) or a ``finetune.distill`` run
        (the student with its adapters); see :func:`run_manifest`.

        Raises:
            FileNotFoundError: No ``nextocc.json`` in ``run_dir`` and it is no compile/distill run.
            ValueError: A malformed manifest, a path that leaves ``run_dir``, or a manifest of another class.
        """
        root = Path(run_dir).resolve()
        man_path = root / MANIFEST_FILE
        if man_path.is_file():
            manifest = json.loads(man_path.read_text(encoding="utf-8"))
        else:
            manifest = run_manifest(root)
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{man_path} is not a {MANIFEST_FORMAT} manifest.")
        if manifest.get("class") != cls.__name__:
            raise ValueError(f"{man_path} holds a {manifest.get('class')}, not a {cls.__name__}; use that class.")
        state_path = None
        if manifest.get("program", PROGRAM_FILE) is None and not manifest.get("adapters"):
            raise ValueError(f"{man_path}: 'program' may be null only for a distilled student ('adapters').")
        if manifest.get("program", PROGRAM_FILE) is not None:  # a distilled student runs zero-shot: no state file
            state_path = safe_child(root, manifest.get("program", PROGRAM_FILE))
            if state_path.suffix != ".json":  # JSON state only: never a pickle named by a manifest
                raise ValueError(f"{man_path}: the program state must be a .json file, got "
                                 f"{manifest.get('program')!r}.")
        specs = manifest.get("lms") or {}
        # spec strings only (what save() writes): a dict could smuggle an api_base that receives the user's API key
        if not isinstance(specs, dict) or any(v is not None and not isinstance(v, str) for v in specs.values()):
            raise ValueError(f"{man_path}: 'lms' must map steps to LM spec strings; pass lm= to load() instead.")
        specs = {**specs, **adapter_specs(root, manifest)}
        if data_dir is None and taxonomy is None:
            saved = manifest.get("data_dir")
            if isinstance(saved, str) and Path(saved).is_absolute() and Path(saved).is_dir():
                data_dir = saved
        if lm is not None:
            reasoner_lm = reasoner_lm if reasoner_lm is not None else lm
            predictor_lm = predictor_lm if predictor_lm is not None else lm
        prog = cls._from_manifest(
            manifest,
            run_dir=root,
            reasoner_lm=reasoner_lm if reasoner_lm is not None else specs.get("reasoner"),
            predictor_lm=predictor_lm if predictor_lm is not None else specs.get("predictor"),
            taxonomy=taxonomy,
            data_dir=data_dir,
            **kwargs,
        )
        if state_path is not None:
            dspy.Module.load(prog, state_path)
        return prog

    load = ClassOrInstanceMethod(_load_run_dir.__func__, dspy.Module.load)
