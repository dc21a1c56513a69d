"""Serve any verifier of the project behind the remote-verifier protocol (``remote.py``):

    lightning-search serve-verifier --config verifier.yaml [--host 127.0.0.1 --port 8000 --device cuda]

``verifier.yaml`` gives the verifier as ``class_path`` / ``init_args``, as in a run's ``verifiers:``. The server
is one process: requests are read and their PNGs decoded concurrently (``ThreadingHTTPServer``), and each
request's batch is scored in one verifier call on the verifier's device, one call at a time (a lock: one model,
one device). It binds 127.0.0.1 unless told otherwise.

Why the standard library's ``http.server`` and no web framework: the protocol is two routes with JSON bodies
and the verifier call dominates the time, so a framework (FastAPI + uvicorn, Flask) would add dependencies
to every environment that hosts a judge and nothing the protocol needs. Put a reverse proxy (TLS, rate
limits) in front of it to expose it beyond one machine.

With a token (read from the environment variable named by ``token_env``; never logged), every ``POST /score``
must carry ``Authorization: Bearer <token>`` or is answered 401. Malformed requests are answered 400, a
verifier's refusal of the input (wrong channels, a condition it cannot read) 400 with its message, and an
unexpected failure 500; each with a one-line JSON ``{"error": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from lightning_search.errors import ConfigurationError, LightningSearchError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.transport import decode_png

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 512 * 2**20


class BadRequest(Exception):
    """A request the server cannot score (answered 400 with this message)."""


def load_verifier_config(path: str | Path) -> Verifier:
    """The verifier a YAML file gives as ``class_path`` / ``init_args``, built with jsonargparse (as the CLI
    builds ``verifiers:``)."""
    import yaml
    from jsonargparse import ArgumentParser

    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"verifier config {str(path)!r} not found")
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigurationError(
            f"verifier config {str(path)!r} must give the verifier as class_path / init_args, e.g. "
            "class_path: lightning_search.verifiers.ClipScoreVerifier, init_args: {model: tiny}"
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--verifier", type=Verifier)
    try:
        config = parser.parse_object({"verifier": spec})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
        return instantiate(config).verifier
    except LightningSearchError:
        raise
    except Exception as err:  # jsonargparse reports unknown classes and arguments in many types
        ours = err.__cause__ or err.__context__
        if isinstance(ours, LightningSearchError):
            raise ours from None
        raise ConfigurationError(f"verifier config {str(path)!r}: {str(err).splitlines()[0][:300]}") from None


def _decode_image(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a base64 PNG string")
    try:
        return decode_png(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, OSError):  # PIL raises UnidentifiedImageError (an OSError)
        raise BadRequest(f"{where} is not a base64 PNG") from None


def _stack(images: list[torch.Tensor], what: str) -> torch.Tensor:
    if len({tuple(i.shape) for i in images}) > 1:
        raise BadRequest(f"all {what} of a request must have one size and channel count")
    return torch.stack(images)


class VerifierService:
    """The protocol without the HTTP: a request's JSON -> the answer's JSON, scored by ``verifier`` on
    ``device`` under a lock."""

    def __init__(self, verifier: Verifier, device: str | torch.device = "cpu") -> None:
        self.verifier = verifier.to(device).eval()
        self.device = torch.device(device)
        self.name = type(verifier).__name__
        self.lock = threading.Lock()

    def health(self) -> dict[str, Any]:
        v = self.verifier
        return {"status": "ok", "verifier": self.name, "x0_time": v.x0_time, "channels": v.channels}

    def score(self, request: Any) -> dict[str, Any]:
        items = request.get("items") if isinstance(request, dict) else None
        if not isinstance(items, list):
            raise BadRequest('the body must be {"items": [{"id": ..., "image": ..., "condition": ...}, ...]}')
        if not items:
            return {"scores": []}
        ids, images, x0_images, conditions = [], [], [], []
        needs_x0 = self.verifier.x0_time is not None
        for n, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item or "image" not in item:
                raise BadRequest(f"item {n} must be an object with id, image and condition")
            if not isinstance(item["id"], (str, int)) or isinstance(item["id"], bool):
                raise BadRequest(f"item {n}: id must be a string or an integer")
            ids.append(item["id"])
            images.append(_decode_image(item["image"], f"item {n}: image"))
            conditions.append(item.get("condition"))
            if needs_x0:
                if "x0_image" not in item:
                    raise BadRequest(f"item {n}: this verifier needs x0_image (x0_time={self.verifier.x0_time})")
                x0_images.append(_decode_image(item["x0_image"], f"item {n}: x0_image"))
        if len(set(ids)) != len(ids):
            raise BadRequest("ids must be unique within a request")
        batch = _stack(images, "images").to(self.device)
        x0 = _stack(x0_images, "x0_images").to(self.device) if needs_x0 else None
        with self.lock, torch.inference_mode():
            try:
                scores = self.verifier(batch, conditions, x0).float().cpu().tolist()
            except LightningSearchError as err:  # the verifier refused this input: the client must change it
                raise BadRequest(str(err)) from None
        # JSON has no NaN: a non-finite score goes as null, which the client rejects with a clear message
        return {"scores": [{"id": i, "score": s if math.isfinite(s) else None} for i, s in zip(ids, scores)]}


def make_handler(service: VerifierService, token: str | None) -> type[BaseHTTPRequestHandler]:
    """The request handler class of one service (``token``: the bearer token to require, or None)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 120  # seconds per socket operation: a client that stops sending frees its thread

        def log_message(self, format: str, *args: Any) -> None:  # the request line, never the headers
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self.close_connection = True
            self._send(status, {"error": " ".join(message.split())[:500]})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/health":
                self._send(200, service.health())
            else:
                self._error(404, f"no route {self.path!r}; POST /score or GET /health")

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/score":
                self._error(404, f"no route {self.path!r}; POST /score or GET /health")
                return
            if token is not None:
                given = self.headers.get("Authorization", "")
                expected = "Bearer " + token
                if not hmac.compare_digest(given.encode(), expected.encode()):  # constant time
                    self._error(401, "missing or wrong bearer token")
                    return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._error(411, "a Content-Length header is required")
                return
            if not 0 <= length <= MAX_REQUEST_BYTES:
                self._error(413, f"the body must be at most {MAX_REQUEST_BYTES} bytes")
                return
            try:
                request = json.loads(self.rfile.read(length).decode("utf-8"))
                answer = service.score(request)
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._error(400, "the body is not JSON")
            except BadRequest as err:
                self._error(400, str(err))
            except Exception as err:  # a bug or a device failure: logged here, a short line to the client
                log.exception("scoring failed")
                self._error(500, f"the verifier failed: {type(err).__name__}")
            else:
                self._send(200, answer)

    return Handler


def make_server(
    verifier: Verifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    device: str | torch.device = "cpu",
) -> ThreadingHTTPServer:
    """A server for ``verifier`` bound to ``host:port`` (port 0: any free port, see ``server_address``);
    run it with ``serve_forever()``, stop it with ``shutdown()`` and ``server_close()``."""
    service = VerifierService(verifier, device)
    server = ThreadingHTTPServer((host, port), make_handler(service, token or None))
    server.daemon_threads = True
    return server


def serve(
    verifier: Verifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    token_env: str | None = "LS_VERIFIER_TOKEN",
    device: str = "cpu",
    ready: Callable[[ThreadingHTTPServer], None] | None = None,
) -> None:
    """Serve until interrupted; the token (if any) comes from the environment variable ``token_env``."""
    token = os.environ.get(token_env) if token_env else None
    server = make_server(verifier, host, port, token, device)
    address = f"http://{server.server_address[0]}:{server.server_address[1]}"
    log.info("serving %s on %s (device %s, %s)", type(verifier).__name__, address, device,
             f"token from ${token_env}" if token else "no token")  # fmt: skip
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
