"""HTTP + JSON for verifiers that live in another process: PNG images, a POST bounded by an overall deadline,
and retries with exponential backoff. Shared by the VLM grader (``vlm_grader.py``), the remote verifier
(``remote.py``) and its server (``server.py``); only the standard library is used.

Why a deadline beside the socket timeout: ``timeout`` bounds each socket operation, so a server that trickles
one byte every second (or a proxy that keeps a connection alive) never trips it and a call could last for
ever. :func:`post_json` therefore measures the time left before every read and also arms a timer that shuts the
socket down when the deadline passes, which ends a read blocked anywhere in ``http.client`` (the status line,
the headers or the body).

Failures are :class:`HTTPProblem` (internal): each caller turns the last one into its own
:class:`~lightning_search.errors.LightningSearchError` with a message for its user. Nothing here logs or
raises a request's headers, so a bearer token never leaves the ``Authorization`` header.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import math
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from lightning_search.errors import ConfigurationError

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ANSWER_BYTES = 64 * 2**20


class HTTPProblem(Exception):
    """One failed exchange: what went wrong (safe to show), the HTTP status if any, and whether a retry may
    help. ``tries`` is set by :func:`with_retries`."""

    def __init__(self, problem: str, status: int | None = None, retry: bool = True) -> None:
        super().__init__(problem)
        self.problem, self.status, self.retry, self.tries = problem, status, retry, 1


class DeadlineExceeded(HTTPProblem):
    """The overall deadline passed (never retried)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem, retry=False)


class Deadline:
    """A point in time (``time.monotonic``) ``seconds`` from now; None: no deadline."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float:
        return math.inf if self.end is None else self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def exceeded(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"the overall deadline of {self.seconds:g} s passed {what}")


# -- images ---------------------------------------------------------------------------------------------------
def encode_png(image: torch.Tensor) -> bytes:
    """image (C, H, W) in [0, 1], C = 1 or 3 -> 8-bit grey or RGB PNG bytes (values rounded to k / 255)."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(image: torch.Tensor) -> str:
    """image (C, H, W) in [0, 1] -> base64 text of its PNG (:func:`encode_png`)."""
    return base64.b64encode(encode_png(image)).decode("ascii")


def decode_png(data: bytes) -> torch.Tensor:
    """PNG (or any format PIL reads) bytes -> (C, H, W) float32 in [0, 1]; grey stays 1 channel, everything else
    becomes RGB (alpha dropped)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L") if img.mode in ("L", "1", "I;16", "I") else img.convert("RGB")
        array = np.asarray(img, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).float() / 255
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


# -- one POST ---------------------------------------------------------------------------------------------------
def default_retry_status(status: int) -> bool:
    """Retry 5xx and 429 (the server is busy or broken for now); not other 4xx (a retry cannot fix them)."""
    return status >= 500 or status == 429


def describe_os_error(err: BaseException) -> str:
    """``URLError``-like errors carry the real cause in ``reason``; a bare timeout has an empty message."""
    reason = getattr(err, "reason", err)
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


def error_summary(data: bytes, limit: int = 300) -> str:
    """A server's error body on one line: the ``error`` of a JSON object, or the text itself (truncated)."""
    text = data.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
        if isinstance(payload, dict) and "error" in payload:
            text = str(payload["error"])
    except ValueError:
        pass
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _cut(sock: socket.socket, fired: threading.Event) -> None:
    """Deadline timer: shutting the socket down makes a read blocked in another thread return at once."""
    fired.set()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def post_json(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    deadline: Deadline,
    retry_status: Callable[[int], bool] = default_retry_status,
    retry_malformed: bool = False,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> Any:
    """POST ``body`` (JSON bytes) to ``url`` and return the decoded JSON answer of a 2xx response.

    ``timeout`` bounds each socket operation (connect, each read), ``deadline`` the whole exchange. Raises
    :class:`HTTPProblem` (connection errors and timeouts: retry; HTTP errors: ``retry_status(code)``; an answer
    that is not JSON: ``retry_malformed``) or :class:`DeadlineExceeded`.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPProblem(f"{url!r} is not an http(s) URL", retry=False)
    if deadline.expired():
        raise deadline.exceeded("before the request")
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=min(timeout, deadline.remaining()))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fired, timer = threading.Event(), None
    try:
        connection.connect()
        sock = connection.sock  # kept: http.client drops connection.sock once a response will close it
        if deadline.end is not None:
            timer = threading.Timer(max(deadline.remaining(), 0.0), _cut, (sock, fired))
            timer.daemon = True
            timer.start()
        sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        connection.request("POST", path, body=body, headers=sent)
        response = connection.getresponse()
        chunks, size = [], 0
        while True:
            left = deadline.remaining()
            if left <= 0:
                raise deadline.exceeded(f"while reading the answer of {url} ({size} bytes so far)")
            sock.settimeout(min(timeout, left))
            chunk = response.read1(65536)  # read1: one socket read, so the deadline is checked between reads
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise HTTPProblem(f"the answer of {url} is larger than {max_bytes} bytes", retry=False)
            chunks.append(chunk)
        if fired.is_set():  # the cut socket reads as the end of the body
            raise deadline.exceeded(f"while reading the answer of {url} ({size} bytes so far)")
    except HTTPProblem:
        raise
    except (OSError, http.client.HTTPException) as err:  # refused / reset connections, timeouts, cut sockets
        if fired.is_set() or deadline.expired():
            raise deadline.exceeded(f"waiting for {url}") from None
        raise HTTPProblem(describe_os_error(err)) from None
    finally:
        if timer is not None:
            timer.cancel()
        connection.close()
    data = b"".join(chunks)
    if not 200 <= response.status < 300:
        detail = error_summary(data)
        message = f"HTTP {response.status} {response.reason}" + (f": {detail}" if detail else "")
        raise HTTPProblem(message, status=response.status, retry=retry_status(response.status))
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPProblem("the response body is not JSON", retry=retry_malformed) from None


# -- retries -------------------------------------------------------------------------------------------------------
def with_retries(
    attempt: Callable[[], T],
    *,
    max_retries: int,
    backoff: float,
    max_backoff: float,
    deadline: Deadline,
    describe: str,
) -> T:
    """``attempt()`` until it returns, retrying an :class:`HTTPProblem` that allows it up to ``max_retries``
    times; the wait before retry k (1, 2, ...) is ``backoff * 2**(k-1)`` seconds, at most ``max_backoff``, and
    a retry whose wait would pass the deadline is not made. Every failed try is logged (``describe`` says what
    was tried); the last problem is raised with ``tries`` set."""
    tries = 0
    while True:
        try:
            return attempt()
        except HTTPProblem as problem:
            tries = problem.tries = tries + 1
            log.warning("%s, try %d/%d: %s", describe, tries, max_retries + 1, problem.problem)
            if not problem.retry or tries > max_retries:
                raise
            wait = min(backoff * 2 ** (tries - 1), max_backoff)
            if wait >= deadline.remaining():
                late = deadline.exceeded(f"before try {tries + 1} (after {tries}: {problem.problem})")
                late.tries = tries
                raise late from None
        time.sleep(wait)


def endpoint_url(url: str, path: str, what: str) -> str:
    """The URL of a server's ``path`` (``/score``, ``/chat/completions``) from its base URL (``path`` is added)
    or its full one (kept as it is); ``what`` names the setting in the message refusing a non-http(s) URL."""
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{what} must be an http(s) URL, got {url!r}")
    url = url.rstrip("/")
    return url if url.endswith(path) else url + path


class HTTPClient:
    """How a client of a JSON-over-HTTP server makes its requests: ``timeout`` seconds per socket operation
    (connect, each read), ``deadline_s`` seconds for a whole call, every request and retry included (None: no
    limit), and up to ``max_retries`` retries after the first try, the wait before retry k being
    ``backoff * 2**(k-1)`` seconds, at most ``max_backoff`` (:func:`with_retries`).

    It holds no secret: a token or API key is passed to each :meth:`post` and goes only into that request's
    ``Authorization`` header.
    """

    def __init__(
        self, timeout: float, deadline_s: float | None, max_retries: int, backoff: float, max_backoff: float
    ) -> None:
        if timeout <= 0 or max_retries < 0 or backoff < 0 or (deadline_s is not None and deadline_s <= 0):
            raise ConfigurationError(
                "timeout > 0, deadline_s > 0 (or None), max_retries >= 0 and backoff >= 0 are required, got "
                f"{timeout}, {deadline_s}, {max_retries}, {backoff}"
            )
        self.timeout, self.max_retries = float(timeout), max_retries
        self.deadline_s = None if deadline_s is None else float(deadline_s)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)

    def deadline(self) -> Deadline:
        """The deadline of a call starting now."""
        return Deadline(self.deadline_s)

    def post(self, url: str, body: bytes, deadline: Deadline, secret: str | None = None, **options: Any) -> Any:
        """One :func:`post_json` with this client's timeout and ``secret`` (if any) as the bearer token;
        ``options``: post_json's ``retry_status`` and ``retry_malformed``."""
        headers = {"Authorization": "Bearer " + secret} if secret else {}
        return post_json(url, body, headers=headers, timeout=self.timeout, deadline=deadline, **options)

    def retrying(self, attempt: Callable[[], T], deadline: Deadline, describe: str) -> T:
        """``attempt()`` with this client's retries, within ``deadline`` (:func:`with_retries`)."""
        return with_retries(
            attempt,
            max_retries=self.max_retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            deadline=deadline,
            describe=describe,
        )
