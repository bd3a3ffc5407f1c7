"""A served two-model student (vLLM OpenAI-compatible server, here a stdlib stub): request shape and constraint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from programs.next_occupation import NextOccupation
from programs.serving import constraint_body
from signatures import PredictOccupation, ReasonAndPredict

HISTORY = {"person_id": "p1", "jobs": [{"title": "Nursing Assistant", "start_year": 2012, "end_year": 2016},
                                      {"title": "Licensed Practical Nurse", "start_year": 2016}]}


@pytest.fixture
def vllm_stub():
    """A stub of ``vllm serve ... --enable-lora --lora-modules reason=... predict=...`` on 127.0.0.1.

    It records every request body and answers like vLLM would under the request's structured-output constraint:
    a choice request gets the choice naming "Registered Nurses", an unconstrained predict request free text, a
    reason request a reason reply.
    """
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body["_path"], body["_auth"] = self.path, self.headers.get("Authorization")
            requests.append(body)
            choices = (body.get("structured_outputs") or {}).get("choice") or body.get("guided_choice")
            if choices:
                content = next((c for c in choices if "\nRegistered Nurses\n" in c), choices[0])
            elif body["model"] == "predict":  # unconstrained: free text the program has to normalize
                content = "[[ ## occupation ## ]]\nregistered nurse (RN)\n\n[[ ## completed ## ]]"
            else:
                content = "[[ ## reason ## ]]\nMoved up in patient care.\n\n[[ ## completed ## ]]"
            reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    server.shutdown()
    server.server_close()


def _served(url: str, name: str) -> dict:
    return {"model": f"hosted_vllm/{name}", "api_base": url, "cache": False, "num_retries": 0}


def test_two_model_student_sends_guided_choice_over_onet_titles(vllm_stub, taxonomy, monkeypatch):
    url, requests = vllm_stub
    monkeypatch.setenv("VLLM_KEY", "sk-test-123")
    program = NextOccupation(mode="two_step", lm={**_served(url, "reason"), "api_key_env": "VLLM_KEY"},
                             predictor_lm=_served(url, "predict"), taxonomy=taxonomy)
    pred = program(HISTORY)
    assert [r["model"] for r in requests] == ["reason", "predict"]  # one LoRA module per step, one server
    assert all(r["_path"] == "/v1/chat/completions" for r in requests)
    assert requests[0]["_auth"] == "Bearer sk-test-123"
    assert "structured_outputs" not in requests[0]  # the reason is free text
    choices = requests[1]["structured_outputs"]["choice"]
    assert len(choices) == len(set(taxonomy.titles)) and len(choices) > 900
    assert "[[ ## occupation ## ]]\nRegistered Nurses\n\n[[ ## completed ## ]]\n" in choices
    assert pred.occupation == "Registered Nurses" and pred.onet_code == "29-1141.00" and pred.matched
    assert pred.reason == "Moved up in patient care."
    assert (pred.ranking, pred.constraint) == ("text", "server")


def test_older_vllm_style_and_off(vllm_stub, taxonomy):
    url, requests = vllm_stub
    program = NextOccupation(mode="two_step", lm=_served(url, "reason"), predictor_lm=_served(url, "predict"),
                             taxonomy=taxonomy, server_constraint="guided_choice")
    assert program(HISTORY).occupation == "Registered Nurses"
    assert "guided_choice" in requests[-1] and "structured_outputs" not in requests[-1]
    requests.clear()
    program.server_constraint = "off"
    pred = program(HISTORY)
    assert "guided_choice" not in requests[-1] and "structured_outputs" not in requests[-1]
    assert pred.constraint == "none"


def test_joint_step_gets_a_regex_with_free_reason(taxonomy):
    import re

    body = constraint_body(ReasonAndPredict, taxonomy.titles)
    pattern = re.compile(body["structured_outputs"]["regex"])
    reply = "[[ ## reason ## ]]\nCares for patients.\n\n[[ ## occupation ## ]]\nRegistered Nurses\n\n[[ ## completed ## ]]\n"
    assert pattern.fullmatch(reply)
    assert not pattern.fullmatch(reply.replace("Registered Nurses", "Chief Happiness Officer"))
    assert constraint_body(PredictOccupation, taxonomy.titles, "off") is None


def test_metrics_record_the_ranking_method(vllm_stub, taxonomy):
    import dspy

    from programs.scoring import score_program

    url, _ = vllm_stub
    program = NextOccupation(mode="two_step", lm=_served(url, "reason"), predictor_lm=_served(url, "predict"),
                             taxonomy=taxonomy)
    example = dspy.Example(history=json.dumps(HISTORY), occupation="Registered Nurses",
                           gold_codes=["29-1141.00"]).with_inputs("history")
    scored, records = score_program(program, [example], taxonomy)
    assert scored["ranking_methods"] == {"text": 1} and scored["constraint_methods"] == {"server": 1}
    assert scored["AccEM"] == 100 and records[0]["ranking"] == "text"
