"""vLLM's two-leg disaggregated-serving protocol (NIXL pull mode), as request-body rewrites.

The field handling copies vLLM's reference proxy (``tests/v1/kv_connector/nixl_integration/
toy_proxy_server.py``; see docs/live_cluster.md): the prefill leg is the client's body with
``max_tokens=1``, ``stream=false`` and ``kv_transfer_params.do_remote_decode``; the decode leg is the
*original* body plus the ``kv_transfer_params`` object the prefill response returned. A body without
``kv_transfer_params`` is a plain request (the instance prefills and decodes locally).
"""

from __future__ import annotations

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
    """The prefill leg (docs/live_cluster.md, the router's protocol, step 1)."""
    # Shallow copies throughout: only top-level keys change, and the prompt (often thousands of
    # token ids) is shared, not copied, so a leg costs microseconds whatever the prompt length.
    out = {k: v for k, v in body.items() if k not in _PREFILL_DROP}
    out["kv_transfer_params"] = dict(PREFILL_KV_PARAMS)
    out["stream"] = False
    out["max_tokens"] = 1
    if "max_completion_tokens" in out:
        out["max_completion_tokens"] = 1
    return out


def decode_body(body: dict[str, Any], kv_transfer_params: dict[str, Any] | None) -> dict[str, Any]:
    """The decode leg (§1.2 step 4): the original body plus the prefill's ``kv_transfer_params``.
    Without them (a connector that returned none) the decode instance prefills locally."""
    out = dict(body)
    if kv_transfer_params:
        out["kv_transfer_params"] = kv_transfer_params
    return out


def plain_body(body: dict[str, Any]) -> dict[str, Any]:
    """One ordinary request: the instance computes prefill and decode itself, no KV transfer."""
    out = dict(body)
    out.pop("kv_transfer_params", None)
    return out
