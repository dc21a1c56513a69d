"""The remote verifier and its server, on 127.0.0.1 with ephemeral ports: the served verifier gives the local
verifier's scores, answers may come in any order, the deadline holds against servers that hang or trickle,
5xx are retried, wrong tokens and malformed answers fail clearly, and the token never leaks."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import pickle
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_search.errors import ConfigurationError, LightningSearchError
from lightning_search.verifiers import VERIFIERS, RemoteVerifier
from lightning_search.verifiers.remote import RemoteVerifierError
from lightning_search.verifiers.server import load_verifier_config, make_server
from lightning_search.verifiers.transport import png_base64

SECRET = "ls-token-SECRET-0123456789"
CLIP_YAML = "class_path: lightning_search.verifiers.ClipScoreVerifier\ninit_args: {model: tiny}\n"


def _quantised(n: int = 4, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Images whose values are k / 255: exactly what an 8-bit PNG carries, so the server sees these pixels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g).float() / 255


def _grey(n: int) -> torch.Tensor:
    """Image i is flat grey at level i / 10 (the fake servers score it 10 * level = i)."""
    return torch.stack([torch.full((3, 8, 8), i / 10) for i in range(n)])


class Served:
    """A real verifier server (``make_server``) on an ephemeral port, in a thread."""

    def __init__(self, verifier, token: str | None = None) -> None:
        self.server = make_server(verifier, "127.0.0.1", 0, token=token)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeServer:
    """A hand-written server of the protocol whose ``mode`` says how it misbehaves. It scores an image by its
    mean grey level x 10, so the right score of each item is known without the server's help."""

    def __init__(self, mode: str = "shuffle", failures: int = 0) -> None:
        self.mode, self.failures = mode, failures
        self.requests: list[dict] = []
        self.answered: list[list[str]] = []
        self.auth: list[str | None] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.auth.append(self.headers.get("Authorization"))
                try:
                    fake.answer(self, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (deadline)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def level(item: dict) -> float:
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(item["image"]))), dtype=np.float64)
        return round(pixels.mean() / 255 * 10, 6)

    def _send(self, handler, status: int, data: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, handler, body: dict) -> None:
        items = body["items"]
        scores = [{"id": item["id"], "score": self.level(item)} for item in items]
        if self.mode == "hang":
            self.release.wait(20)
            return
        if self.mode == "trickle_body":  # headers at once, then one byte every 50 ms for ever
            handler.send_response(200)
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            while not self.release.wait(0.05):
                handler.wfile.write(b" ")
                handler.wfile.flush()
            return
        if self.mode == "trickle_headers":  # the status line itself, one byte every 50 ms
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"." * 10000:
                if self.release.wait(0.05):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            return
        if self.failures > 0:
            self.failures -= 1
            self._send(handler, 503, b'{"error": "warming up"}')
            return
        if self.mode == "status400":
            self._send(handler, 400, b'{"error": "item 0: image is not a base64 PNG"}')
            return
        if self.mode == "not_json":
            self._send(handler, 200, b"<html>gateway says hello</html>")
            return
        if self.mode == "shuffle":
            random.Random(len(self.requests)).shuffle(scores)
            self.answered.append([s["id"] for s in scores])
        elif self.mode == "missing":
            scores = scores[1:]
        elif self.mode == "duplicate":
            scores = scores + scores[:1]
        elif self.mode == "unknown":
            scores[0]["id"] = "not-asked"
        elif self.mode == "bool":
            scores[0]["score"] = True
        elif self.mode == "string":
            scores[0]["score"] = "0.5"
        elif self.mode == "null":
            scores[0]["score"] = None
        elif self.mode == "nan":
            scores[0]["score"] = math.nan  # json.dumps writes the non-standard NaN literal
        elif self.mode == "no_scores":
            scores = {"id": "0"}
        self._send(handler, 200, json.dumps({"scores": scores}).encode())

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("LS_TEST_VERIFIER_TOKEN", SECRET)
    return "LS_TEST_VERIFIER_TOKEN"


@pytest.fixture(scope="module")
def served_clip(tmp_path_factory):
    """The tiny CLIP score built from a serve-verifier YAML, as the command builds it."""
    path = tmp_path_factory.mktemp("serve") / "verifier.yaml"
    path.write_text(CLIP_YAML)
    return load_verifier_config(path)


def test_registered_and_config_errors(tmp_path):
    assert VERIFIERS["remote"] is RemoteVerifier
    with pytest.raises(ConfigurationError, match="http"):
        RemoteVerifier(url="127.0.0.1:8000")
    with pytest.raises(ConfigurationError, match="batch_size"):
        RemoteVerifier(batch_size=0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\n")
    with pytest.raises(ConfigurationError, match="class_path"):
        load_verifier_config(bad)
    bad.write_text("class_path: lightning_search.verifiers.NoSuchVerifier\n")
    with pytest.raises(ConfigurationError, match="bad.yaml"):
        load_verifier_config(bad)


def test_served_verifier_gives_the_local_scores(served_clip, clip_score):
    images = _quantised(5)
    prompts = ["a red cat", "a photo of a blue dog", "a red cat", "the cat of the dog", "a house"]
    conditions = [*prompts[:4], {"prompt": prompts[4], "tag": "single_object", "include": [{"class": "house"}]}]
    local = clip_score(images, prompts)  # the session's own tiny CLIP (same seed), not the served instance
    with Served(served_clip) as served:
        one_batch = RemoteVerifier(url=served.url, batch_size=5, token_env=None)(images, conditions)
        split = RemoteVerifier(url=served.url + "/score", batch_size=2, token_env=None)(images, conditions)
        health = json.loads(urllib.request.urlopen(served.url + "/health", timeout=5).read())
    assert torch.equal(one_batch, local)  # same pixels, same batch: the same numbers
    torch.testing.assert_close(split, local, atol=1e-6, rtol=1e-6)  # three requests of 2, 2, 1
    assert health == {"status": "ok", "verifier": "ClipScoreVerifier", "x0_time": None, "channels": 3}


def test_serve_verifier_command(tmp_path, monkeypatch, token_env, clip_score):
    """`lightning-search serve-verifier --config ...` end to end (in a thread, port 0)."""
    import lightning_search.verifiers.server as server_module
    from lightning_search.cli import main

    (tmp_path / "verifier.yaml").write_text(CLIP_YAML)
    started: queue.Queue = queue.Queue()
    real = server_module.make_server

    def recording(*args, **kwargs):
        server = real(*args, **kwargs)
        started.put(server)
        return server

    monkeypatch.setattr(server_module, "make_server", recording)
    argv = ["serve-verifier", "--config", str(tmp_path / "verifier.yaml"), "--port", "0", "--token_env", token_env]
    thread = threading.Thread(target=main, args=(argv,), daemon=True)
    thread.start()
    server = started.get(timeout=60)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        images = _quantised(2, seed=3)
        scores = RemoteVerifier(url=url, token_env=token_env)(images, ["a cat", "a dog"])
        assert torch.equal(scores, clip_score(images, ["a cat", "a dog"]))
    finally:
        server.shutdown()
        thread.join(10)
    assert not thread.is_alive()


def test_answers_in_any_order_map_to_their_items():
    with FakeServer("shuffle") as fake:
        scores = RemoteVerifier(url=fake.url, batch_size=3, token_env=None)(_grey(7), ["p"] * 7)
    assert scores.tolist() == pytest.approx(list(range(7)), abs=0.05)  # image i is worth i
    assert [len(r["items"]) for r in fake.requests] == [3, 3, 1]
    assert len({item["id"] for r in fake.requests for item in r["items"]}) == 7
    assert fake.answered[0] != [item["id"] for item in fake.requests[0]["items"]]  # it did shuffle


@pytest.mark.parametrize("mode", ["hang", "trickle_body", "trickle_headers"])
def test_deadline_holds_against_a_server_that_hangs_or_trickles(mode):
    with FakeServer(mode) as fake:
        verifier = RemoteVerifier(url=fake.url, timeout=30, deadline_s=0.6, max_retries=3, token_env=None)
        start = time.monotonic()
        with pytest.raises(RemoteVerifierError, match="deadline of 0.6 s") as info:
            verifier(_grey(2), ["p", "p"])
        elapsed = time.monotonic() - start
    assert elapsed < 0.6 + 1.5  # the socket timeout (30 s) and the trickle (minutes) are not waited for
    assert len(fake.requests) == 1 and "tries" in str(info.value)


def test_5xx_is_retried_with_backoff_then_succeeds(caplog):
    with FakeServer("ok", failures=2) as fake, caplog.at_level(logging.WARNING):
        scores = RemoteVerifier(url=fake.url, max_retries=3, backoff=0.01, token_env=None)(_grey(3), ["p"] * 3)
    assert scores.tolist() == pytest.approx([0, 1, 2], abs=0.05)
    assert len(fake.requests) == 3 and caplog.text.count("HTTP 503") == 2
    with FakeServer("ok", failures=10) as fake:
        with pytest.raises(RemoteVerifierError, match=r"after 2 tries: HTTP 503 .*warming up"):
            RemoteVerifier(url=fake.url, max_retries=1, backoff=0.01, token_env=None)(_grey(1), ["p"])
    assert len(fake.requests) == 2


def test_connection_errors_are_retried_with_exponential_backoff(monkeypatch, caplog):
    import socket

    import lightning_search.verifiers.transport as transport

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    monkeypatch.setattr(transport.time, "sleep", waits.append)
    verifier = RemoteVerifier(
        url=f"http://127.0.0.1:{port}", max_retries=4, backoff=0.5, max_backoff=1.5, token_env=None
    )
    with caplog.at_level(logging.WARNING), pytest.raises(RemoteVerifierError, match="after 5 tries: ConnectionRefused"):
        verifier(_grey(1), ["p"])
    assert waits == [0.5, 1.0, 1.5, 1.5]  # backoff * 2**k, capped at max_backoff
    assert caplog.text.count("ConnectionRefusedError") == 5


def test_client_errors_and_malformed_answers_are_not_retried():
    with FakeServer("status400") as fake:
        with pytest.raises(RemoteVerifierError, match="HTTP 400 .*not a base64 PNG"):
            RemoteVerifier(url=fake.url, max_retries=3, backoff=0.01, token_env=None)(_grey(1), ["p"])
    assert len(fake.requests) == 1
    with FakeServer("not_json") as fake:
        with pytest.raises(RemoteVerifierError, match="not JSON"):
            RemoteVerifier(url=fake.url, max_retries=3, backoff=0.01, token_env=None)(_grey(1), ["p"])
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "mode, message",
    [
        ("missing", "lacks 1 of 2 ids"),
        ("duplicate", "twice"),
        ("unknown", "not-asked.*not asked"),
        ("bool", "not a number: True"),
        ("string", "not a number: '0.5'"),
        ("null", "not a number: None"),
        ("nan", "not finite: nan"),
        ("no_scores", "malformed answer"),
    ],
)
def test_bad_answers_fail_clearly(mode, message):
    with FakeServer(mode) as fake:
        with pytest.raises(RemoteVerifierError, match=message) as info:
            RemoteVerifier(url=fake.url, token_env=None)(_grey(2), ["p", "p"])
    assert isinstance(info.value, LightningSearchError) and fake.url in str(info.value)


def test_wrong_token_fails_clearly_and_the_token_never_leaks(served_clip, token_env, monkeypatch, caplog):
    images, prompts = _quantised(2), ["a cat", "a dog"]
    with Served(served_clip, token=SECRET) as served, caplog.at_level(logging.DEBUG):
        good = RemoteVerifier(url=served.url, token_env=token_env)
        assert good(images, prompts).shape == (2,)
        monkeypatch.setenv(token_env, "wrong-" + SECRET)
        wrong = RemoteVerifier(url=served.url, token_env=token_env, max_retries=3, backoff=0.01)
        with pytest.raises(
            RemoteVerifierError, match=r"refused the token from \$LS_TEST_VERIFIER_TOKEN \(HTTP 401\)"
        ) as info:
            wrong(images, prompts)
        monkeypatch.delenv(token_env)
        with pytest.raises(RemoteVerifierError, match="no token"):
            RemoteVerifier(url=served.url, token_env=token_env)(images, prompts)
    for text in (str(info.value), caplog.text, repr(good), repr(wrong), json.dumps(good.state_dict(), default=str)):
        assert SECRET not in text
    assert pickle.loads(pickle.dumps(good))._token is None
    assert "try 1/4: HTTP 401" in caplog.text and "try 2/4" not in caplog.text  # another try cannot fix a token


def test_token_is_sent_as_a_bearer_header(token_env):
    with FakeServer("ok") as fake:
        RemoteVerifier(url=fake.url, token_env=token_env)(_grey(1), ["p"])
        RemoteVerifier(url=fake.url, token_env=None)(_grey(1), ["p"])
    assert fake.auth == [f"Bearer {SECRET}", None]


def _post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        assert body.count(b"\n") == 0  # one line
        return err.code, json.loads(body)


def test_server_answers_malformed_input_with_a_one_line_json_error(served_clip):
    png = base64.b64encode(b"\x89PNG not really").decode()
    image, grey = png_base64(_quantised(1)[0]), png_base64(_quantised(1, channels=1)[0])
    with Served(served_clip, token=SECRET) as served:
        url, auth = served.url + "/score", {"Authorization": f"Bearer {SECRET}"}
        assert _post(url, b"{}", {})[0] == 401
        cases = {
            b"not json": "not JSON",
            b'{"things": []}': "items",
            json.dumps({"items": [{"id": "a", "image": png, "condition": "p"}]}).encode(): "not a base64 PNG",
            json.dumps({"items": [{"id": "a", "image": image, "condition": "p"}] * 2}).encode(): "unique",
            json.dumps({"items": [{"id": "a", "image": grey, "condition": "p"}]}).encode(): "3-channel",
            json.dumps({"items": [{"id": "a", "image": image, "condition": 7}]}).encode(): "prompts as conditions",
        }
        for body, message in cases.items():
            status, answer = _post(url, body, auth)
            assert status == 400 and message in answer["error"], (body[:40], answer)
        status, answer = _post(url, json.dumps({"items": [{"id": 3, "image": image, "condition": "p"}]}).encode(), auth)
    assert status == 200 and answer["scores"][0]["id"] == 3 and isinstance(answer["scores"][0]["score"], float)
