"""What the router refuses before it reaches an instance, answered the way vLLM would.

A client body is parsed and checked here, once, at the boundary: malformed JSON, wrong types,
out-of-range sampling fields, a ``max_tokens`` beyond the model's context and an unknown model all
get vLLM's error object (``{"error": {"message", "type", "param", "code"}}``) with vLLM's status
(400, or 404 for an unknown model) and never cost an instance a request. The ranges are vLLM's own
(``vllm/sampling_params.py::SamplingParams._verify_args`` and the OpenAI request models); where
vLLM is silent the choice is named in a comment. Fields the router does not know pass through to
the instance, which validates them itself (vLLM ignores unknown fields).
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any, Callable

import orjson

# vLLM's engine transport (MessagePack) carries signed/unsigned 64-bit integers only.
INT64_MAX = 2**63 - 1
# vLLM refuses n above VLLM_MAX_N_SEQUENCES (default 16384; SamplingParams._verify_args): a client
# asking for 10**6 parallel samples would otherwise reach an instance, which builds every one of them.
MAX_N_SEQUENCES = 16384
# OpenAI chat roles vLLM's chat template path accepts.
CHAT_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


class BadRequest(ValueError):
    """A request the router answers itself: ``status`` and vLLM's error ``type`` and ``param``."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param

    @property
    def error_type(self) -> str:
        return error_type(self.status)


def error_type(status: int) -> str:
    """vLLM's error ``type`` for an HTTP status (``create_error_response``)."""
    known = {400: "BadRequestError", 404: "NotFoundError", 413: "RequestEntityTooLargeError",
             422: "UnprocessableEntityError"}
    if status in known:
        return known[status]
    try:
        return HTTPStatus(status).phrase.replace(" ", "") + "Error"
    except ValueError:
        return "InternalServerError"


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """vLLM's error object (``vllm/entrypoints/serve/engine/protocol.py::ErrorResponse``)."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": status}}


def parse_json(raw: bytes) -> Any:
    """Parse a request body; every way it can be malformed is a ``BadRequest`` with the reason.

    orjson refuses invalid UTF-8, NaN/Infinity literals, integers beyond 64 bits and nesting deeper
    than 1024 levels (its recursion limit), so none of them reaches the router as a Python error.
    """
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


# ---- field checks (each raises BadRequest naming the field) ---------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(name: str, lo: int = -INT64_MAX - 1, hi: int = INT64_MAX, allow_none: bool = True) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if v is None and allow_none:
            return
        if not _is_int(v):
            raise BadRequest(f"{name} must be an integer, got {v!r:.60}", param=name)
        if not lo <= v <= hi:
            raise BadRequest(f"{name} must be in [{lo}, {hi}], got {v}", param=name)
    return check


def _num(name: str, lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if v is None:
            return
        if not _is_num(v) or not math.isfinite(v):
            raise BadRequest(f"{name} must be a finite number, got {v!r:.60}", param=name)
        if v < lo or v > hi or (lo_open and v == lo):
            raise BadRequest(f"{name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v}", param=name)
    return check


def _bool(name: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if v is not None and not isinstance(v, bool):
            raise BadRequest(f"{name} must be a boolean, got {v!r:.60}", param=name)
    return check


def _stop(v: Any) -> None:
    if v is None:
        return
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise BadRequest("stop must be a string or a list of strings", param="stop")
    if any(not s for s in items):
        raise BadRequest("stop cannot contain an empty string.", param="stop")


def _stream_options(v: Any) -> None:
    if v is None:
        return
    if not isinstance(v, dict):
        raise BadRequest("stream_options must be an object", param="stream_options")
    for key in ("include_usage", "continuous_usage_stats"):
        if key in v and not isinstance(v[key], (bool, type(None))):
            raise BadRequest(f"stream_options.{key} must be a boolean", param="stream_options")


def _model(v: Any) -> None:
    if v is not None and not isinstance(v, str):
        raise BadRequest(f"model must be a string, got {v!r:.60}", param="model")


def _logprobs_completion(v: Any) -> None:
    _int("logprobs", -1, INT64_MAX)(v)  # vLLM: non-negative or -1 (all)


def _logprobs_chat(v: Any) -> None:
    _bool("logprobs")(v)


# vLLM's ranges (SamplingParams._verify_args); temperature ≤ 2 is vLLM's too.
COMMON_FIELDS: dict[str, Callable[[Any], None]] = {
    "model": _model,
    "stream": _bool("stream"),
    "stream_options": _stream_options,
    "n": _int("n", 1, MAX_N_SEQUENCES),
    "temperature": _num("temperature", 0.0, 2.0),
    "top_p": _num("top_p", 0.0, 1.0, lo_open=True),
    "top_k": _int("top_k", -1, INT64_MAX),
    "min_p": _num("min_p", 0.0, 1.0),
    "presence_penalty": _num("presence_penalty", -2.0, 2.0),
    "frequency_penalty": _num("frequency_penalty", -2.0, 2.0),
    "repetition_penalty": _num("repetition_penalty", 0.0, math.inf, lo_open=True),
    "seed": _int("seed"),
    "stop": _stop,
    "min_tokens": _int("min_tokens", 0, INT64_MAX),
    "ignore_eos": _bool("ignore_eos"),
    "skip_special_tokens": _bool("skip_special_tokens"),
    "return_token_ids": _bool("return_token_ids"),
}
COMPLETION_FIELDS = {**COMMON_FIELDS, "logprobs": _logprobs_completion, "echo": _bool("echo")}
CHAT_FIELDS = {**COMMON_FIELDS, "logprobs": _logprobs_chat, "top_logprobs": _int("top_logprobs", -1, INT64_MAX)}


def _check_prompt(prompt: Any) -> int | None:
    """A single prompt (text or token ids); returns its token count when exact (token ids)."""
    if prompt is None:
        raise BadRequest("prompt is required", param="prompt")
    if isinstance(prompt, str):
        if not prompt:
            raise BadRequest("prompt must not be empty", param="prompt")
        return None
    if not isinstance(prompt, list) or not prompt:
        raise BadRequest("prompt must be a non-empty string or a non-empty list of token ids", param="prompt")
    # Fast path in C: a prompt can be 100k token ids, checked on every request. orjson writes a
    # list of non-negative ints as digits and commas only (a bool, float, null, string, list or
    # negative number brings in another character; an int beyond 64 bits raises), and max()
    # bounds it: 2.5x faster than checking each element's type.
    try:
        digits = orjson.dumps(prompt)[1:-1].translate(None, b"0123456789,")
    except TypeError:
        digits = b"?"
    if not digits and max(prompt) <= INT64_MAX:
        return len(prompt)
    for t in prompt:
        if not _is_int(t) or not 0 <= t <= INT64_MAX:
            # Batched prompts (a list of strings or of lists) are valid OpenAI; the router splits
            # requests into legs one prompt at a time, so it serves single prompts only.
            if isinstance(t, (str, list)):
                raise BadRequest("prompt: a batch of prompts is not supported by the router; "
                                 "send one prompt (a string or one list of token ids) per request", param="prompt")
            raise BadRequest(f"prompt token ids must be non-negative integers, got {t!r:.60}", param="prompt")
    return len(prompt)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of message objects", param="messages")
    for k, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{k}] must be an object with 'role' and 'content', got {m!r:.60}",
                             param="messages")
        role = m.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise BadRequest(f"messages[{k}].role must be one of {', '.join(sorted(CHAT_ROLES))}, "
                             f"got {role!r:.60}", param="messages")
        content = m.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(isinstance(p, dict) and isinstance(p.get("type"), str)
                                                    for p in content):
            raise BadRequest(f"messages[{k}].content must be a string, null or a list of content parts "
                             "(objects with a 'type')", param="messages")


def validate_request(body: Any, chat: bool, max_model_len: int | None = None,
                     models: frozenset[str] | None = None,
                     engine: bool = False) -> tuple[dict[str, Any], int | None]:
    """Check a completions/chat body; returns it with its exact prompt length (token ids) or None.

    ``max_model_len`` and ``models`` are what the instances serve (learned from their
    ``/v1/models``); when unknown, those checks are left to the instance. ``engine``: validate as
    an instance does (the fake vLLM), which takes ``kv_transfer_params`` from the router.
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if "kv_transfer_params" in body and not engine:
        raise BadRequest("kv_transfer_params is set by the router, not by clients", param="kv_transfer_params")
    fields = CHAT_FIELDS if chat else COMPLETION_FIELDS
    for key, value in body.items():
        check = fields.get(key)
        if check is not None:
            check(value)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise BadRequest("Stream options can only be defined when `stream=True`.", param="stream_options")
    model = body.get("model")
    if models is not None and model and model not in models:
        raise BadRequest(f"The model `{model}` does not exist.", status=404, param="model")
    if chat:
        _check_messages(body.get("messages"))
        n_prompt = None
    else:
        n_prompt = _check_prompt(body.get("prompt"))
    out_name, out = "max_tokens", body.get("max_tokens")
    if chat and body.get("max_completion_tokens") is not None:
        out_name, out = "max_completion_tokens", body["max_completion_tokens"]
    for name in ("max_tokens", "max_completion_tokens"):
        _int(name, 1, INT64_MAX)(body.get(name))
    mt = body.get("min_tokens")
    if _is_int(mt) and _is_int(out) and mt > out:
        raise BadRequest(f"min_tokens must be less than or equal to {out_name}={out}, got {mt}.", param="min_tokens")
    if max_model_len is not None:
        if _is_int(out) and out > max_model_len - 1:  # a prompt has at least one token
            raise BadRequest(f"{out_name}={out} cannot be greater than max_model_len={max_model_len}. "
                             "Please request fewer output tokens.", param=out_name)
        if n_prompt is not None:
            if n_prompt > max_model_len:
                raise BadRequest(f"This model's maximum context length is {max_model_len} tokens. However, your "
                                 f"prompt contains {n_prompt} input tokens, which exceeds this limit even without "
                                 "any output tokens. Please reduce the length of the input prompt.", param="prompt")
            if _is_int(out) and n_prompt + out > max_model_len:
                raise BadRequest(f"This model's maximum context length is {max_model_len} tokens. However, you "
                                 f"requested {out} output tokens and your prompt contains {n_prompt} input tokens, "
                                 f"for a total of {n_prompt + out} tokens. Please reduce the length of the input "
                                 "prompt or the number of requested output tokens.", param=out_name)
    return body, n_prompt
