"""The VLM grader against a chat-completions server on 127.0.0.1 run by the test (loopback only)."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_search.errors import LightningSearchError
from lightning_search.verifiers import VLMGraderVerifier
from lightning_search.verifiers.vlm_grader import VLMGraderError, image_to_data_url, parse_grades

SECRET = "sk-test-SECRET-0123456789"


class FakeJudge:
    """A chat-completions server; ``mode`` says how it answers. Candidate i is an image of grey level i / 10,
    and the judge grades it overall = 10 - i (so the right mapping is visible), answering later for lower i."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append(body)
                    judge.auth.append(self.headers.get("Authorization"))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                if judge.mode == "trickle":  # headers at once, then one byte of the body every 50 ms
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    try:
                        while not judge.release.wait(0.05):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):  # the client gave up
                        pass
                    return
                content = judge.answer(body)
                if content is None:
                    return
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict) -> str | None:
        if self.mode == "hang":
            self.release.wait(5)
            return None
        if self.mode == "malformed":
            return "The image is lovely, I'd say 8/10."
        parts = body["messages"][1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        png = base64.b64decode(url.split(",", 1)[1])
        level = np.asarray(Image.open(io.BytesIO(png))).mean() / 255
        i = round(level * 10)
        time.sleep(0.05 * (4 - i))  # candidate 0 answers last
        grades = {"accuracy_to_prompt": i, "originality": 1, "visual_quality": 2, "consistency": 3,
                  "Emotional Resonance": 4, "overall": 10 - i}  # fmt: skip
        return "```json\n" + json.dumps(grades) + "\n```"

    def __enter__(self) -> FakeJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _images(n: int = 5) -> torch.Tensor:
    return torch.stack([torch.full((3, 8, 8), i / 10) for i in range(n)])


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("LS_TEST_VLM_KEY", SECRET)
    return "LS_TEST_VLM_KEY"


def test_out_of_order_answers_map_to_their_candidates(api_key, caplog):
    with FakeJudge() as judge, caplog.at_level(logging.DEBUG):
        v = VLMGraderVerifier(endpoint=judge.url, model="judge", api_key_env=api_key, max_workers=5, timeout=5)
        scores = v(_images(), ["a grey square"] * 5)
        mean = VLMGraderVerifier(endpoint=judge.url, api_key_env=api_key, aggregate="mean", max_workers=5)
        means = mean(_images(), ["a grey square"] * 5)
    assert scores.tolist() == [10.0, 9.0, 8.0, 7.0, 6.0]
    # (accuracy i + 1 + 2 + 3 + 4) / 5; "Emotional Resonance" normalised to emotional_resonance
    torch.testing.assert_close(means, torch.tensor([(i + 10) / 5 for i in range(5)]))
    assert len(judge.requests) == 10
    first = judge.requests[0]
    assert first["model"] == "judge" and first["response_format"] == {"type": "json_object"}
    assert "a grey square" in first["messages"][1]["content"][0]["text"]
    assert set(judge.auth) == {f"Bearer {SECRET}"}  # sent to the server...
    assert SECRET not in caplog.text and SECRET not in repr(v)  # ...and nowhere else


def test_malformed_answers_are_retried_then_fail_clearly(api_key, caplog):
    with FakeJudge("malformed") as judge, caplog.at_level(logging.DEBUG):
        v = VLMGraderVerifier(endpoint=judge.url, api_key_env=api_key, max_retries=2, backoff=0.01, max_workers=1)
        with pytest.raises(VLMGraderError) as info:
            v(_images(1), ["p"])
    assert len(judge.requests) == 3  # first try + 2 retries
    message = str(info.value)
    assert "candidate 0" in message and "3 tries" in message and "no JSON object" in message
    assert isinstance(info.value, LightningSearchError)
    assert SECRET not in message and SECRET not in caplog.text
    assert caplog.text.count("try") == 3


def test_hanging_server_hits_the_timeout(api_key):
    with FakeJudge("hang") as judge:
        v = VLMGraderVerifier(endpoint=judge.url, api_key_env=api_key, timeout=0.3, max_retries=1, backoff=0.01)
        start = time.perf_counter()
        with pytest.raises(VLMGraderError, match="timed out|Timeout") as info:
            v(_images(1), ["p"])
        elapsed = time.perf_counter() - start
    assert 0.5 < elapsed < 3.0  # two tries of 0.3 s, not the server's 5 s
    assert len(judge.requests) == 2
    assert SECRET not in str(info.value)


def test_overall_deadline_holds_against_a_trickling_server(api_key):
    with FakeJudge("trickle") as judge:
        v = VLMGraderVerifier(endpoint=judge.url, api_key_env=api_key, timeout=30, deadline_s=0.5, max_retries=2)
        start = time.perf_counter()
        with pytest.raises(VLMGraderError, match="deadline of 0.5 s") as info:
            v(_images(2), ["p", "p"])
        elapsed = time.perf_counter() - start
    assert elapsed < 0.5 + 1.5  # not the 30 s socket timeout, not the trickle's minutes, no retry after it
    assert len(judge.requests) == 2 and SECRET not in str(info.value)  # one try per candidate


def test_client_errors_are_not_retried(api_key):
    with FakeJudge() as judge:
        v = VLMGraderVerifier(endpoint=judge.url.replace("/v1", "/v2"), api_key_env=api_key, max_retries=3)
        with pytest.raises(VLMGraderError, match="HTTP 404"):
            v(_images(1), ["p"])
    assert len(judge.requests) == 1


def test_no_key_no_header(monkeypatch):
    monkeypatch.delenv("LS_TEST_NO_KEY", raising=False)
    with FakeJudge() as judge:
        VLMGraderVerifier(endpoint=judge.url, api_key_env="LS_TEST_NO_KEY")(_images(1), ["p"])
    assert judge.auth == [None]


def test_parse_and_encode():
    assert parse_grades('{"overall": "7.5", "Accuracy": 3}', ["overall", "accuracy_to_prompt"]) == {
        "overall": 7.5,
        "accuracy_to_prompt": 3.0,
    }
    with pytest.raises(Exception, match="no 'overall' grade"):  # JSON true is not a grade (float(True) is 1.0)
        parse_grades('{"overall": true}', ["overall"])
    url = image_to_data_url(torch.full((3, 4, 4), 0.5))
    assert url.startswith("data:image/png;base64,")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert pixels.shape == (4, 4, 3) and (pixels == 128).all()


def test_bad_images_are_rejected_before_any_request():
    v = VLMGraderVerifier(endpoint="http://127.0.0.1:9/v1", max_retries=0)  # nothing listens: no request may go
    with pytest.raises(LightningSearchError, match=r"in \[0, 1\]"):
        v(_images(2) + 2, ["p", "p"])
    with pytest.raises(LightningSearchError, match="3-channel"):
        v(_images(2)[:, :1], ["p", "p"])
