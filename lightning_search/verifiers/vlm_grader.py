"""A VLM judge through any OpenAI-compatible chat-completions endpoint (a local vLLM server, or a hosted API):
the "LLM grader" of Ma et al. 2025 (Sec. 5), which rates each image on a rubric (accuracy to prompt,
originality, visual quality, internal consistency, emotional resonance) and an overall grade, 0-10 each.

Each image goes as a base64 PNG data URL in one request; the answer is asked as a JSON object. Requests run
concurrently in a thread pool (network-bound) and the scores come back in candidate order whatever order the
answers arrive in. A failed request (connection error, timeout, HTTP 429/5xx, an answer that is not the
asked JSON) is retried with exponential backoff; after the last try a :class:`VLMGraderError` says which
candidate failed and why. HTTP 400/401/403/404/422 are not retried (a retry cannot fix them). ``deadline_s``
bounds a whole ``score`` call (every candidate, every retry), also against a server that trickles bytes; the
HTTP, PNG and retry code is shared with the remote verifier (``transport.py``).

The API key is read once from the environment variable named by ``api_key_env`` (``OPENAI_API_KEY`` by
default; none needed for a local server) and sent only in the ``Authorization`` header: it is never logged,
never in an exception message and not in the module's repr. Only the standard library is used (urllib).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from lightning_search.errors import ConfigurationError, LightningSearchError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import condition_text
from lightning_search.verifiers.transport import Deadline, HTTPClient, HTTPProblem, endpoint_url, png_base64

log = logging.getLogger(__name__)

RUBRIC = ("accuracy_to_prompt", "originality", "visual_quality", "consistency", "emotional_resonance")
AXES = (*RUBRIC, "overall")

SYSTEM_PROMPT = (
    "You are a strict, consistent judge of AI-generated images. You grade one image against the text prompt "
    "it was generated from, and answer with a single JSON object and nothing else."
)
USER_PROMPT = """Text prompt: "{prompt}"

Grade the attached image from 0 (worst) to 10 (best) on each axis:
- accuracy_to_prompt: every object, attribute, count and relation of the prompt is depicted correctly.
- originality: the composition and interpretation are creative rather than generic.
- visual_quality: sharpness, lighting, colour, anatomy, no artefacts.
- consistency: the scene is internally coherent (perspective, physics, style, no contradictions).
- emotional_resonance: the image conveys the mood or feeling the prompt implies.
- overall: your overall grade of the image as a result for this prompt.

Answer only with JSON of this form (numbers, no comments):
{{"accuracy_to_prompt": 0, "originality": 0, "visual_quality": 0, "consistency": 0, "emotional_resonance": 0, "overall": 0}}"""

_NO_RETRY = {400, 401, 403, 404, 422}


class VLMGraderError(LightningSearchError):
    """The VLM grader could not get a valid grade for a candidate."""


class _BadAnswer(Exception):
    """An answer that is not the asked JSON (retried)."""


def image_to_data_url(image: torch.Tensor) -> str:
    """image (C, H, W) in [0, 1] -> ``data:image/png;base64,...`` (8-bit RGB or grey PNG)."""
    return "data:image/png;base64," + png_base64(image)


def parse_grades(content: str, needed: Sequence[str]) -> dict[str, float]:
    """The grades of a judge's answer: the first JSON object in it (code fences allowed), keys normalised to
    snake_case; every ``needed`` axis must be a number in [0, 10]."""
    match = re.search(r"\{.*\}", content, flags=re.DOTALL)
    if match is None:
        raise _BadAnswer(f"no JSON object in the answer {content[:80]!r}")
    try:
        raw = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise _BadAnswer(f"invalid JSON in the answer ({err.msg})") from None
    if not isinstance(raw, dict):
        raise _BadAnswer("the answer's JSON is not an object")
    grades: dict[str, float] = {}
    for key, value in raw.items():
        name = re.sub(r"[^a-z0-9]+", "_", str(key).lower()).strip("_")
        name = {"accuracy": "accuracy_to_prompt", "internal_consistency": "consistency"}.get(name, name)
        if isinstance(value, bool):  # JSON true / false are not grades (float(True) would be 1.0)
            continue
        try:
            grades[name] = float(value)
        except (TypeError, ValueError):
            continue
    for axis in needed:
        if axis not in grades:
            raise _BadAnswer(f"the answer has no {axis!r} grade")
        if not 0.0 <= grades[axis] <= 10.0:
            raise _BadAnswer(f"{axis} grade {grades[axis]} is outside [0, 10]")
    return grades


class VLMGraderVerifier(Verifier):
    """Score = the judge's ``overall`` grade (or another aggregate of the rubric), 0-10; conditions are prompts.

    Args:
        endpoint: base URL of the OpenAI-compatible API (``http://localhost:8000/v1`` for ``vllm serve``), or
            the full ``.../chat/completions`` URL.
        model: the model name the server expects.
        api_key_env: name of the environment variable holding the API key (not the key itself).
        aggregate: ``"overall"``, ``"mean"`` (of the five rubric axes), one axis name, or {axis: weight}.
        max_workers: concurrent requests.
        timeout: seconds per socket operation (connect, each read) of a request.
        deadline_s: seconds a whole ``score`` call may take, retries included (None: no limit).
        max_retries: retries after the first try; the wait before retry k is ``backoff * 2**(k-1)`` (at
            most ``max_backoff``) seconds.
        json_mode: send ``response_format={"type": "json_object"}`` (vLLM and OpenAI support it; turn off for
            servers that reject it).
    """

    channels = 3

    def __init__(
        self,
        endpoint: str = "http://localhost:8000/v1",
        model: str = "Qwen/Qwen2.5-VL-7B-Instruct",
        api_key_env: str | None = "OPENAI_API_KEY",
        aggregate: str | Mapping[str, float] = "overall",
        max_workers: int = 8,
        timeout: float = 60.0,
        deadline_s: float | None = 600.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 300,
        json_mode: bool = True,
    ) -> None:
        super().__init__()
        self.url = endpoint_url(endpoint, "/chat/completions", "VLM grader endpoint")
        self.model = model
        self.api_key_env = api_key_env
        # Read once at construction; kept private and out of repr, logs and errors.
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        if isinstance(aggregate, str):
            if aggregate == "mean":
                aggregate = {axis: 1.0 for axis in RUBRIC}
            elif aggregate in AXES:
                aggregate = {aggregate: 1.0}
            else:
                raise ConfigurationError(f"aggregate must be 'mean', a dict of weights, or one of {', '.join(AXES)}")
        unknown = set(aggregate) - set(AXES)
        if unknown or not aggregate or sum(aggregate.values()) <= 0:
            raise ConfigurationError(f"aggregate weights must name axes of {AXES} with a positive sum, got {aggregate}")
        self.aggregate = dict(aggregate)
        if max_workers < 1:
            raise ConfigurationError(f"VLM grader max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self.http = HTTPClient(timeout, deadline_s, max_retries, backoff, max_backoff)
        self.temperature, self.max_tokens, self.json_mode = temperature, max_tokens, json_mode

    def extra_repr(self) -> str:
        return f"url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, aggregate={self.aggregate}"

    def __getstate__(self) -> dict[str, Any]:  # never pickle the key (e.g. into a checkpoint or a worker)
        state = self.__dict__.copy()
        state["_api_key"] = None
        return state

    # -- one request ----------------------------------------------------------------------------------------
    def _body(self, prompt: str, image: torch.Tensor) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": USER_PROMPT.format(prompt=prompt)},
                        {"type": "image_url", "image_url": {"url": image_to_data_url(image)}},
                    ],
                },
            ],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return json.dumps(body).encode()

    def _post(self, body: bytes, deadline: Deadline) -> str:
        payload = self.http.post(
            self.url,
            body,
            deadline,
            self._api_key,
            retry_status=lambda code: code not in _NO_RETRY,
            retry_malformed=True,
        )
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _BadAnswer("the response has no choices[0].message.content") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)

    def grade(
        self, prompt: str, image: torch.Tensor, index: int = 0, deadline: Deadline | None = None
    ) -> dict[str, float]:
        """The rubric grades of one image (C, H, W) for ``prompt``, with retries (within ``deadline``, or
        ``deadline_s`` from now)."""
        body = self._body(prompt, image)
        deadline = deadline or self.http.deadline()
        needed = list(self.aggregate)

        def attempt() -> dict[str, float]:
            try:
                return parse_grades(self._post(body, deadline), needed)
            except _BadAnswer as err:  # a sampled answer: another try may well be valid
                raise HTTPProblem(f"malformed answer: {err}") from None

        try:
            return self.http.retrying(attempt, deadline, f"VLM grader {self.url}, candidate {index}")
        except HTTPProblem as problem:
            raise VLMGraderError(
                f"VLM grader at {self.url} (model {self.model!r}) gave no valid grade for candidate {index} after "
                f"{problem.tries} tries: {problem.problem}. Check that the server is up, serves a vision model and "
                "answers with the asked JSON; time limits and retries are set by timeout=, deadline_s= and "
                "max_retries="
            ) from None

    def aggregate_grades(self, grades: Mapping[str, float]) -> float:
        return sum(w * grades[axis] for axis, w in self.aggregate.items()) / sum(self.aggregate.values())

    # -- the batch ------------------------------------------------------------------------------------------
    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        prompts = [condition_text(c) for c in conditions]
        cpu_images = images.detach().cpu()
        deadline = self.http.deadline()  # one for the whole call, shared by every candidate's requests
        with ThreadPoolExecutor(max_workers=min(self.max_workers, max(1, len(prompts)))) as pool:
            futures = [pool.submit(self.grade, p, cpu_images[i], i, deadline) for i, p in enumerate(prompts)]
            try:
                # Results are read in submission order: the i-th score is the i-th candidate's.
                scores = [self.aggregate_grades(f.result()) for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return torch.tensor(scores, dtype=torch.float32, device=images.device)
