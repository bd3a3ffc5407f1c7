import json

import dspy

from compile.export import dpo_row, export_traces, live_request, sft_row


class Reason(dspy.Signature):
    """Explain the person's likely next move."""

    history: str = dspy.InputField()
    reason: str = dspy.OutputField()


class Predict(dspy.Signature):
    """Name the next occupation."""

    history: str = dspy.InputField()
    reason: str = dspy.InputField()
    occupation: str = dspy.OutputField()


class Joint(dspy.Signature):
    """Reason, then name the next occupation."""

    history: str = dspy.InputField()
    reason: str = dspy.OutputField()
    occupation: str = dspy.OutputField()


def test_sft_prompt_is_byte_equal_to_live_request():
    step = dspy.Predict(Reason)
    row = sft_row(step, {"history": "1. 2001-2004: Cashier"}, {"reason": "Likes retail."})
    assert json.dumps(row["prompt"]) == json.dumps(live_request(step, {"history": "1. 2001-2004: Cashier"}))
    assert row["completion"][0]["role"] == "assistant"
    assert "[[ ## reason ## ]]\nLikes retail." in row["completion"][0]["content"]
    assert row["completion"][0]["content"].rstrip().endswith("[[ ## completed ## ]]")


def test_export_files_and_counts(tmp_path):
    steps = {"reason": dspy.Predict(Reason), "predict": dspy.Predict(Predict), "joint": dspy.Predict(Joint)}
    oracles = {
        "a": {"history": "h1", "reason": "r1", "gold_occupation": "Cashiers"},
        "b": {"history": "h2", "reason": "r2", "gold_occupation": "Retail Salespersons"},
    }
    chosen = {"history": "h1", "reason": "good"}
    rejected = {"history": "h1", "reason": "bad"}
    counts = export_traces(tmp_path, oracles, [(chosen, rejected)], steps, joint=True)
    assert counts == {"sft_reason.jsonl": 2, "sft_predict.jsonl": 2, "sft_joint.jsonl": 6, "dpo_reason.jsonl": 1}
    rows = [json.loads(x) for x in (tmp_path / "dpo_reason.jsonl").read_text().splitlines()]
    assert "good" in rows[0]["chosen"][0]["content"] and "bad" in rows[0]["rejected"][0]["content"]
    assert rows[0]["prompt"] == dpo_row(steps["reason"], {"history": "h1"}, {"reason": "x"}, {"reason": "y"})["prompt"]
    counts = export_traces(tmp_path, oracles, [], steps, joint=False)
    assert counts["sft_joint.jsonl"] == 4 and "sft_direct.jsonl" not in counts
    direct = dspy.Predict(dspy.Signature("history -> occupation", "Name the next occupation."))
    counts = export_traces(tmp_path, oracles, [], {**steps, "direct": direct}, joint=False)
    rows = [json.loads(x) for x in (tmp_path / "sft_direct.jsonl").read_text().splitlines()]
    assert counts["sft_direct.jsonl"] == 2 and "Cashiers" in rows[0]["completion"][0]["content"]
