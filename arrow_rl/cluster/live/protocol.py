"""vLLM's two-leg disaggregated-serving protocol (NIXL pull mode), as request-body rewrites.

The field handling copies vLLM's reference proxy (``tests/v1/kv_connector/nixl_integration/
toy_proxy_server.py``; see docs/live_cluster.md): the prefill leg is the client's body with
``max_tokens=1``, ``stream=false`` and ``kv_transfer_params.do_remote_decode``; the decode leg is the
*original* body plus the ``kv_transfer_params`` object the prefill response returned. A body without
``kv_transfer_params`` is a plain request (the instance prefills and decodes locally).
"""

from __future__ import annotations

import copy
import math
from typing import Any

# What the prefill leg asks for: "compute the prompt, keep the KV for a remote decode".
PREFILL_KV_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}

# Fields the prefill leg does not support (toy proxy pops them).
_PREFILL_DROP = ("stream_options", "min_tokens", "min_completion_tokens")

# When a text prompt has no token ids, the router estimates its length for routing only (the
# instance's usage report replaces the estimate once the prefill leg returns). ~4 chars per token
# is the usual English BPE ratio.
CHARS_PER_TOKEN_ESTIMATE = 4.0

DEFAULT_MAX_TOKENS = 16  # OpenAI/vLLM completions default when the client gives none


class BadRequest(ValueError):
    """A client body the router cannot route; the message names the field."""


def validate_body(body: Any, chat: bool) -> dict[str, Any]:
    """Check the few fields the router itself relies on; the instance validates the rest."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise BadRequest("field 'messages' must be a non-empty list")
    else:
        prompt = body.get("prompt")
        if prompt is None:
            raise BadRequest("field 'prompt' is required")
        if not isinstance(prompt, (str, list)):
            raise BadRequest("field 'prompt' must be a string or a list of token ids")
        if isinstance(prompt, list):
            if not prompt:
                raise BadRequest("field 'prompt' must not be empty")
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                raise BadRequest("field 'prompt': only a single prompt (a string or one list of "
                                 "integer token ids) is supported")
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise BadRequest(f"field '{key}' must be a positive integer, got {v!r}")
    n = body.get("n", 1)
    if n != 1:
        raise BadRequest(f"field 'n' must be 1 for disaggregated serving, got {n!r}")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("field 'stream' must be a boolean")
    if "kv_transfer_params" in body:
        raise BadRequest("field 'kv_transfer_params' is set by the router, not by clients")
    return body


def prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """Input length for routing: exact for token-id prompts, an estimate for text."""
    if not chat:
        prompt = body["prompt"]
        if isinstance(prompt, list):
            return len(prompt)
        return max(1, math.ceil(len(prompt) / CHARS_PER_TOKEN_ESTIMATE))
    chars = 0
    for m in body["messages"]:
        content = m.get("content", "") if isinstance(m, dict) else ""
        if isinstance(content, list):  # multi-part content: count the text parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        chars += len(str(content))
    return max(1, math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE))


def max_output_tokens(body: dict[str, Any]) -> int:
    v = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(v) if v else DEFAULT_MAX_TOKENS


def prefill_body(body: dict[str, Any]) -> dict[str, Any]:
    """The prefill leg (LIVE_VLLM §1.2 step 2)."""
    out = copy.deepcopy(body)
    out["kv_transfer_params"] = dict(PREFILL_KV_PARAMS)
    out["stream"] = False
    out["max_tokens"] = 1
    if "max_completion_tokens" in out:
        out["max_completion_tokens"] = 1
    for key in _PREFILL_DROP:
        out.pop(key, None)
    return out


def decode_body(body: dict[str, Any], kv_transfer_params: dict[str, Any] | None) -> dict[str, Any]:
    """The decode leg (§1.2 step 4): the original body plus the prefill's ``kv_transfer_params``.
    Without them (a connector that returned none) the decode instance prefills locally."""
    out = copy.deepcopy(body)
    if kv_transfer_params:
        out["kv_transfer_params"] = kv_transfer_params
    return out


def plain_body(body: dict[str, Any]) -> dict[str, Any]:
    """One ordinary request: the instance computes prefill and decode itself, no KV transfer."""
    out = copy.deepcopy(body)
    out.pop("kv_transfer_params", None)
    return out
