"""A stub OpenAI-compatible chat server on 127.0.0.1 that injects faults, plus its pytest fixture.

Modes (``server.mode``, switchable while running):

* ``ok`` -- a well-formed DSPy ChatAdapter reply: every output field the system prompt asks for;
* ``500`` -- HTTP 500; ``429`` -- HTTP 429 with ``Retry-After: <retry_after>``;
* ``malformed`` -- HTTP 200 whose text has no field markers (an unparseable reply);
* ``slow`` -- waits ``slow_seconds`` before answering (a client timeout);
* ``flaky`` -- a seeded share ``fail_rate`` of requests get 500 or 429, the rest ``ok``;
* ``down`` -- :meth:`StubServer.stop` closes the socket: connections are refused.

Every request is counted (``server.requests``, ``server.statuses``) and its body and headers kept
(``server.bodies``, ``server.headers``) so tests can check what reached the server. Usage::

    def test_x(stub_server):
        stub_server.mode = "500"
        lm = dspy.LM("openai/stub", api_base=stub_server.url, api_key="sk-test", num_retries=1)
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

FIELD_VALUES = {
    "reason": "Moved from stocking shelves to the register and stayed in retail.",
    "occupation": "Cashiers",
    "factuality": "5", "coherence": "4", "utility": "4", "errors": "none", "justification": "sound",
}
_FIELD_RE = re.compile(r"\d+\. `(\w+)`")


def output_fields(messages: list[dict]) -> list[str]:
    """The output field names a ChatAdapter system prompt asks for (in order)."""
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    if isinstance(system, list):
        system = " ".join(part.get("text", "") for part in system if isinstance(part, dict))
    _, _, outputs = system.partition("Your output fields are:")
    outputs = outputs.split("All interactions will be structured", 1)[0]
    return _FIELD_RE.findall(outputs)


def chat_reply(messages: list[dict]) -> str:
    """A reply in the ChatAdapter format with a plausible value for every requested output field."""
    parts = [f"[[ ## {name} ## ]]\n{FIELD_VALUES.get(name, 'ok')}" for name in output_fields(messages)]
    return "\n\n".join(parts + ["[[ ## completed ## ]]"])


class StubServer:
    """The server (a :class:`ThreadingHTTPServer` in a daemon thread); see the module docstring."""

    def __init__(self, mode: str = "ok", *, retry_after: float = 0, slow_seconds: float = 3.0,
                 fail_rate: float = 0.2, seed: int = 0):
        self.mode, self.retry_after, self.slow_seconds, self.fail_rate = mode, retry_after, slow_seconds, fail_rate
        self.requests = 0
        self.statuses: Counter = Counter()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _draw(self) -> str:
        with self._lock:
            self.requests += 1
            if self.mode != "flaky":
                return self.mode
            u = self._rng.random()
            return "500" if u < self.fail_rate / 2 else "429" if u < self.fail_rate else "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                with server._lock:
                    server.statuses[status] += 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):  # /v1/models
                self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with server._lock:
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                mode = server._draw()
                if mode == "500":
                    return self._send(500, {"error": {"message": "injected server error", "type": "server_error"}})
                if mode == "429":
                    return self._send(429, {"error": {"message": "injected rate limit", "type": "rate_limit"}},
                                      {"Retry-After": str(server.retry_after)})
                if mode == "slow":
                    time.sleep(server.slow_seconds)
                text = ("Sorry, I cannot answer in that format." if mode == "malformed"
                        else chat_reply(body.get("messages") or []))
                self._send(200, {
                    "id": f"chatcmpl-{server.requests}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "stub"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })

        return Handler

    def stop(self) -> None:
        """Closes the socket (mode ``down``: later connections are refused)."""
        self.mode = "down"
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def stub_server():
    """A running :class:`StubServer` in mode ``ok``; stopped after the test."""
    server = StubServer()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """``python tests/helpers/stub_openai.py --mode malformed``: serve until killed (prints the base URL)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="ok", help="ok, 500, 429, malformed, slow or flaky")
    parser.add_argument("--fail_rate", type=float, default=0.2, help="share of failed requests in mode flaky")
    parser.add_argument("--retry_after", type=float, default=0, help="Retry-After seconds of 429 replies")
    parser.add_argument("--slow_seconds", type=float, default=3.0, help="delay of mode slow")
    parser.add_argument("--url_file", help="write the base URL to this file")
    args = parser.parse_args(argv)
    server = StubServer(args.mode, fail_rate=args.fail_rate, retry_after=args.retry_after,
                        slow_seconds=args.slow_seconds)
    print(server.url, flush=True)
    if args.url_file:
        with open(args.url_file, "w", encoding="utf-8") as fh:
            fh.write(server.url)
    seen = -1
    try:
        while True:
            time.sleep(1)
            if server.requests != seen:
                seen = server.requests
                print(f"requests {server.requests} statuses {dict(server.statuses)}", flush=True)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
