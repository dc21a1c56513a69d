"""A verifier in another process or machine, behind HTTP + JSON: how heavy or conflicting judges (GenEval's
detector stack, VQAScore, a large VLM) join a run without entering its environment.

The protocol (served for any verifier of the project by ``lightning-search serve-verifier``, see
``server.py``; any other server that answers the same way works too):

    POST <url>/score   {"items": [{"id": "0", "image": "<base64 PNG>", "condition": <JSON>}, ...]}
                       (+ "x0_image" per item when the verifier asks for x0-predictions)
    200                {"scores": [{"id": "0", "score": 0.71}, ...]}       (any order; one per id)
    4xx / 5xx          {"error": "one line"}
    GET  <url>/health  {"status": "ok", "verifier": "<name>", ...}

Images travel as 8-bit PNG (values rounded to k / 255, as every sample the prediction writer saves), grey
for 1-channel images and RGB for 3. Conditions travel as JSON (prompts, GenEval's metadata dicts, class ids).
Batches of ``batch_size`` items go one request at a time; connection errors, timeouts and HTTP 5xx / 429 are
retried with exponential backoff; ``deadline_s`` bounds the whole ``score`` call. Wrong tokens (401 / 403),
other client errors, malformed answers, missing / duplicate / unknown ids and scores that are not finite
numbers raise :class:`RemoteVerifierError` at once.

The bearer token is read once from the environment variable named by ``token_env`` and sent only in the
``Authorization`` header: never logged, never in a message, the repr, a pickle or a record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.errors import ConfigurationError, LightningSearchError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.transport import Deadline, HTTPClient, HTTPProblem, endpoint_url, png_base64


class RemoteVerifierError(LightningSearchError):
    """A remote verifier gave no valid scores."""


class RemoteVerifier(Verifier):
    """Scores from a verifier server (``lightning-search serve-verifier`` or any server of the same protocol).

    Args:
        url: the server's base URL (``http://127.0.0.1:8000``; requests go to ``<url>/score``) or the full
            ``.../score`` URL.
        batch_size: images per request.
        timeout: seconds per socket operation (connect, each read).
        deadline_s: seconds a whole ``score`` call may take, every batch and retry included (None: no limit).
        max_retries: retries after the first try of a request; the wait before retry k is ``backoff * 2**(k-1)``
            seconds, at most ``max_backoff``.
        token_env: name of the environment variable holding the server's token (not the token; None or an
            unset variable: no token sent).
        x0_time: ask search for the x0-prediction at this time and send it as ``x0_image`` (for a remote
            verifier that needs it, e.g. the self-supervised one; it must match the served verifier's).
        channels: image channels the served verifier accepts (None: any; checked before any request).
        name: a label for messages (default: the URL).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        batch_size: int = 16,
        timeout: float = 60.0,
        deadline_s: float | None = 300.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        token_env: str | None = "LS_VERIFIER_TOKEN",
        x0_time: float | None = None,
        channels: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.url = endpoint_url(url, "/score", "remote verifier url")
        if batch_size < 1:
            raise ConfigurationError(f"remote verifier batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.http = HTTPClient(timeout, deadline_s, max_retries, backoff, max_backoff)
        self.token_env, self.x0_time, self.channels = token_env, x0_time, channels
        self.label = name or self.url.removesuffix("/score")
        # Read once at construction; kept private and out of repr, logs, errors and pickles.
        self._token = os.environ.get(token_env) if token_env else None

    def extra_repr(self) -> str:
        return f"url={self.url!r}, batch_size={self.batch_size}, deadline_s={self.http.deadline_s}, token_env={self.token_env!r}"

    def __getstate__(self) -> dict[str, Any]:  # never pickle the token (a checkpoint, a spawned worker)
        state = self.__dict__.copy()
        state["_token"] = None
        return state

    def _fail(self, what: str) -> RemoteVerifierError:
        return RemoteVerifierError(f"remote verifier {self.label}: {what}")

    def _request(self, items: list[dict[str, Any]], deadline: Deadline, first: int) -> dict[str, float]:
        """One batch -> {id: score}, with retries."""
        body = json.dumps({"items": items}).encode()
        last = first + len(items) - 1
        try:
            answer = self.http.retrying(
                lambda: self.http.post(self.url, body, deadline, self._token),
                deadline,
                f"remote verifier {self.label}, items {first}-{last}",
            )
        except HTTPProblem as problem:
            if problem.status in (401, 403):
                source = f"${self.token_env}" if self.token_env else "no token_env"
                sent = "the token from " + source if self._token else f"no token ({source} is not set)"
                raise self._fail(
                    f"the server refused {sent} (HTTP {problem.status}); set {source} to the token the server was "
                    "started with"
                ) from None
            raise self._fail(
                f"no scores for items {first}-{last} after {problem.tries} tries: {problem.problem}. Check that "
                "the server is up (GET /health); time limits and retries are set by timeout=, deadline_s= and "
                "max_retries="
            ) from None
        return self._parse(answer, [item["id"] for item in items])

    def _parse(self, answer: Any, ids: list[str]) -> dict[str, float]:
        """Check an answer: every id exactly once, no other id, each score a finite number (not a bool)."""
        entries = answer.get("scores") if isinstance(answer, dict) else None
        if not isinstance(entries, list):
            raise self._fail('malformed answer: expected {"scores": [{"id": ..., "score": ...}, ...]}')
        scores: dict[str, float] = {}
        wanted = set(ids)
        for entry in entries:
            if not isinstance(entry, dict) or "id" not in entry or "score" not in entry:
                raise self._fail(f"malformed answer: each score must be {{'id': ..., 'score': ...}}, got {entry!r:.80}")
            key, value = entry["id"], entry["score"]
            if key not in wanted:
                raise self._fail(f"the answer holds id {key!r:.40}, which was not asked")
            if key in scores:
                raise self._fail(f"the answer holds id {key!r} twice")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._fail(f"the score of id {key!r} is not a number: {value!r:.40}")
            if not math.isfinite(value):
                raise self._fail(f"the score of id {key!r} is not finite: {value}")
            scores[key] = float(value)
        missing = [i for i in ids if i not in scores]
        if missing:
            raise self._fail(f"the answer lacks {len(missing)} of {len(ids)} ids (first: {missing[0]!r})")
        return scores

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """images: (B, C, H, W) in [0, 1] -> (B,) scores in image order, whatever order the answers came in."""
        if self.x0_time is not None and x0_images is None:
            raise self._fail(f"x0_time={self.x0_time} is set but no x0_images were given")
        try:
            json.dumps(list(conditions))
        except (TypeError, ValueError) as err:
            raise self._fail(f"conditions must be JSON values to travel ({err})") from None
        deadline = self.http.deadline()  # one for the whole call
        cpu = images.detach().cpu()
        cpu_x0 = x0_images.detach().cpu() if self.x0_time is not None else None
        scores: list[float] = []
        for start in range(0, cpu.shape[0], self.batch_size):
            items = []
            for i in range(start, min(start + self.batch_size, cpu.shape[0])):
                item = {"id": str(i), "image": png_base64(cpu[i]), "condition": conditions[i]}
                if cpu_x0 is not None:
                    item["x0_image"] = png_base64(cpu_x0[i])
                items.append(item)
            answer = self._request(items, deadline, start)
            scores += [answer[item["id"]] for item in items]
        return torch.tensor(scores, dtype=torch.float32, device=images.device)
