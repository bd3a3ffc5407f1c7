"""LiveProgress counts LM calls and engine tokens while a phase runs."""

from __future__ import annotations

import dspy

from lms.progress import LiveProgress, count_tokens, tokens_processed


class Echo(dspy.Signature):
    """Echo."""

    text: str = dspy.InputField()
    answer: str = dspy.OutputField()


def test_live_progress_counts_calls_tokens_and_items():
    lm = dspy.utils.DummyLM([{"answer": "a"}, {"answer": "b"}])
    before = tokens_processed()
    with LiveProgress(total=2, desc="phase", interval=0.05) as progress:
        with dspy.context(lm=lm):
            dspy.Predict(Echo)(text="x")
            progress.update()
            dspy.Predict(Echo)(text="y")
            progress.update()
        count_tokens(7)
        counts = progress.postfix()
    assert counts["lm_calls"] == 2 and counts["tok"] == 7 and "lm_errors" not in counts
    assert tokens_processed() == before + 7
    assert progress.bar.n == 2
    assert progress.counter not in dspy.settings.callbacks


def test_engine_decoding_moves_the_token_counter(tiny_spec):
    import lms

    lm = lms.load(tiny_spec, dtype="float32", max_field_tokens=4, cache=False)
    before = tokens_processed()
    with dspy.context(lm=lm):
        dspy.Predict(Echo)(text="hello")
    assert tokens_processed() > before


def test_disabled_progress_still_counts():
    with LiveProgress(total=1, desc="quiet", interval=0.05, disable=True) as progress:
        progress.update()
        count_tokens(3)
        assert progress.postfix()["tok"] == 3


def test_off_a_terminal_the_counts_are_logged(caplog):
    import logging
    import time

    caplog.set_level(logging.INFO, logger="lms.progress")
    progress = LiveProgress(total=4, desc="rows", interval=0.02, disable=None, log_interval=0.05)
    assert progress.log_lines  # pytest's captured output is not a terminal: tqdm draws nothing
    with progress:
        progress.update(2)
        count_tokens(5)
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.name == "lms.progress"]
    assert len(lines) >= 2 and lines[-1].endswith("(done)")
    assert "rows: 2/4 items" in lines[0] and "ETA" in lines[0] and "tok 5" in lines[0]
    assert not LiveProgress(total=1, desc="quiet", disable=True).log_lines
