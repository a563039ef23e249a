"""The in-memory workload: three aligned numpy columns, one row per request, plus optional prefixes.

Columns rather than per-request objects because the emulator replays tens of thousands of
requests per second of wall time and the loaders, rate scaling and windowing are all vectorised.

Prefixes (for prefix caching) are a ragged column of *chained block hash ids*: request i's ids are
``prefix_hashes[prefix_offsets[i]:prefix_offsets[i + 1]]``, id j standing for tokens
[j·B, (j+1)·B) with B = ``prefix_block_tokens``. Chained means as in vLLM's block hashes (and the
Mooncake traces' ``hash_ids``): two requests with the same id at position j have the same first
(j+1)·B tokens. Ids may run past the prompt into the output (a conversation's next turn repeats the
answer), never past input + output tokens. Tokens past a request's ids are its own: they never hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Request:
    """One request as the cluster sees it at arrival time."""

    request_id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Workload:
    """A replayable request stream: arrival times (s, non-decreasing, from 0) and token counts.

    ``output_tokens`` is the number of tokens the request will generate; the emulator uses it to
    know when a request finishes, a live cluster passes it as ``max_tokens`` with ``ignore_eos``.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "workload"
    source: str = field(default="", compare=False)
    prefix_hashes: np.ndarray | None = field(default=None, compare=False, repr=False)
    prefix_offsets: np.ndarray | None = field(default=None, compare=False, repr=False)
    prefix_block_tokens: int = field(default=16, compare=False)

    def __post_init__(self) -> None:
        arrival = np.ascontiguousarray(self.arrival_s, dtype=np.float64)
        inputs = np.ascontiguousarray(self.input_tokens, dtype=np.int64)
        outputs = np.ascontiguousarray(self.output_tokens, dtype=np.int64)
        if not (arrival.shape == inputs.shape == outputs.shape) or arrival.ndim != 1:
            raise ValueError(
                f"workload {self.name!r}: columns must be 1-D and the same length, got "
                f"{arrival.shape}, {inputs.shape}, {outputs.shape}"
            )
        if arrival.size and np.any(np.diff(arrival) < 0):
            bad = int(np.argmax(np.diff(arrival) < 0)) + 1
            raise ValueError(f"workload {self.name!r}: arrivals decrease at row {bad}")
        if inputs.size and inputs.min() < 1:
            raise ValueError(f"workload {self.name!r}: input_tokens must be >= 1 (row {int(np.argmin(inputs))})")
        if outputs.size and outputs.min() < 1:
            raise ValueError(f"workload {self.name!r}: output_tokens must be >= 1 (row {int(np.argmin(outputs))})")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "input_tokens", inputs)
        object.__setattr__(self, "output_tokens", outputs)
        if (self.prefix_hashes is None) != (self.prefix_offsets is None):
            raise ValueError(f"workload {self.name!r}: give both prefix_hashes and prefix_offsets, or neither")
        if self.prefix_hashes is not None:
            hashes = np.ascontiguousarray(self.prefix_hashes, dtype=np.int64)
            offsets = np.ascontiguousarray(self.prefix_offsets, dtype=np.int64)
            if self.prefix_block_tokens < 1:
                raise ValueError(f"workload {self.name!r}: prefix_block_tokens must be >= 1, "
                                 f"got {self.prefix_block_tokens}")
            if (hashes.ndim != 1 or offsets.shape != (arrival.size + 1,) or offsets[0] != 0
                    or offsets[-1] != hashes.size or np.any(np.diff(offsets) < 0)):
                raise ValueError(f"workload {self.name!r}: prefix_offsets must be non-decreasing, "
                                 f"start at 0, end at len(prefix_hashes) and have one entry per request + 1")
            too_long = np.diff(offsets) * self.prefix_block_tokens > inputs + outputs + self.prefix_block_tokens - 1
            if too_long.any():
                k = int(np.argmax(too_long))
                raise ValueError(f"workload {self.name!r}: request {k} has {int(offsets[k + 1] - offsets[k])} "
                                 f"prefix blocks of {self.prefix_block_tokens} tokens, more than its "
                                 f"{int(inputs[k] + outputs[k])} tokens")
            object.__setattr__(self, "prefix_hashes", hashes)
            object.__setattr__(self, "prefix_offsets", offsets)

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def has_prefixes(self) -> bool:
        """Whether any request carries prefix block hashes (else prefix caching has nothing to do)."""
        return self.prefix_hashes is not None and self.prefix_hashes.size > 0

    def prefix_ids(self, index: int) -> np.ndarray:
        """Request ``index``'s chained block hash ids (empty without prefixes)."""
        if self.prefix_hashes is None:
            return np.zeros(0, dtype=np.int64)
        return self.prefix_hashes[self.prefix_offsets[index]:self.prefix_offsets[index + 1]]

    def _rows(self, lo: int, hi: int) -> dict:
        """The prefix columns of rows [lo, hi), for the slicing constructors."""
        if self.prefix_hashes is None:
            return {}
        a, b = int(self.prefix_offsets[lo]), int(self.prefix_offsets[hi])
        return dict(prefix_hashes=self.prefix_hashes[a:b], prefix_offsets=self.prefix_offsets[lo:hi + 1] - a,
                    prefix_block_tokens=self.prefix_block_tokens)

    def with_prefix_hashes(self, ids: "list[np.ndarray | list[int]]", block_tokens: int) -> "Workload":
        """This workload with request i's chained block hash ids ``ids[i]`` (blocks of
        ``block_tokens`` tokens; see the module docstring). Mooncake ``hash_ids`` fit as they are
        (``block_tokens=512``)."""
        if len(ids) != len(self):
            raise ValueError(f"workload {self.name!r}: {len(ids)} prefix id lists for {len(self)} requests")
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]) if len(ids) else np.zeros(0, np.int64)
        return Workload(self.arrival_s, self.input_tokens, self.output_tokens, name=self.name, source=self.source,
                        prefix_hashes=flat, prefix_offsets=offsets, prefix_block_tokens=int(block_tokens))

    def with_shared_prefixes(self, group_id: np.ndarray | list[int], prefix_tokens: np.ndarray | list[int] | int,
                             block_tokens: int = 16) -> "Workload":
        """Shared system prompts: request i starts with ``prefix_tokens[i]`` tokens that every
        request of group ``group_id[i]`` shares (a negative group: no shared prefix); the rest of
        its prompt is its own. Blocks of ``block_tokens`` (vLLM's default block size, 16) that lie
        wholly inside the shared part can hit; a partial last block cannot (vLLM caches full blocks).

        The replay of real vLLM runs whose prompts are a 100-token system prompt shared by groups of
        users (11 system prompts × 4 users) then a ~470-token question is one call, with
        ``group_id[i]`` the index (0..10) of request i's system prompt::

            workload.with_shared_prefixes(group_id=system_prompt_index, prefix_tokens=100)

        Each request then carries 6 block ids (96 tokens) shared with its group; the question's
        tokens never hit, so the users of a group need no ids of their own.
        """
        groups = np.asarray(group_id, dtype=np.int64)
        tokens = np.broadcast_to(np.asarray(prefix_tokens, dtype=np.int64), groups.shape)
        if groups.shape != (len(self),):
            raise ValueError(f"workload {self.name!r}: group_id needs one entry per request ({len(self)}), "
                             f"got shape {groups.shape}")
        if np.any(tokens < 0):
            raise ValueError(f"workload {self.name!r}: prefix_tokens must be >= 0")
        if np.any((groups >= 0) & (tokens > self.input_tokens)):
            k = int(np.argmax((groups >= 0) & (tokens > self.input_tokens)))
            raise ValueError(f"workload {self.name!r}: request {k}: prefix_tokens {int(tokens[k])} exceed its "
                             f"{int(self.input_tokens[k])} input tokens")
        nblocks = np.where(groups >= 0, tokens // block_tokens, 0)
        # chained ids: (group, block index) → one id; the same group always has the same prompt
        ids = [shared_prefix_ids(int(g), int(b)) for g, b in zip(groups.tolist(), nblocks.tolist())]
        return self.with_prefix_hashes(ids, block_tokens)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def mean_rate(self) -> float:
        """Mean request rate in requests per second over the trace's span."""
        span = self.duration_s
        return (len(self) - 1) / span if span > 0 else 0.0

    def request(self, index: int) -> Request:
        return Request(
            request_id=index,
            arrival_s=float(self.arrival_s[index]),
            input_tokens=int(self.input_tokens[index]),
            output_tokens=int(self.output_tokens[index]),
        )

    def scaled(self, rate_scale: float) -> "Workload":
        """Multiply the request rate by ``rate_scale`` by dividing every timestamp (Arrow §6.1)."""
        if not rate_scale > 0:
            raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
        return Workload(self.arrival_s / rate_scale, self.input_tokens, self.output_tokens,
                        name=f"{self.name}@x{rate_scale:g}", source=self.source, **self._rows(0, len(self)))

    def window(self, start_s: float, end_s: float) -> "Workload":
        """Requests arriving in [start_s, end_s), re-based so the window starts at time 0."""
        lo = int(np.searchsorted(self.arrival_s, start_s, side="left"))
        hi = int(np.searchsorted(self.arrival_s, end_s, side="left"))
        return Workload(self.arrival_s[lo:hi] - start_s, self.input_tokens[lo:hi], self.output_tokens[lo:hi],
                        name=f"{self.name}[{start_s:g}:{end_s:g}]", source=self.source, **self._rows(lo, hi))

    def head(self, n: int) -> "Workload":
        return Workload(self.arrival_s[:n], self.input_tokens[:n], self.output_tokens[:n],
                        name=f"{self.name}[:{n}]", source=self.source, **self._rows(0, self.arrival_s[:n].size))

    def to_csv(self, path: str | Path) -> None:
        """Write the canonical CSV (``arrival_s,input_tokens,output_tokens``); with prefixes, two
        more columns: ``prefix_block_tokens`` and ``hash_ids`` (space-separated chained ids)."""
        with open(path, "w", encoding="utf-8") as fh:
            if self.prefix_hashes is None:
                fh.write("arrival_s,input_tokens,output_tokens\n")
                for a, i, o in zip(self.arrival_s.tolist(), self.input_tokens.tolist(), self.output_tokens.tolist()):
                    fh.write(f"{a:.6f},{i},{o}\n")
                return
            fh.write("arrival_s,input_tokens,output_tokens,prefix_block_tokens,hash_ids\n")
            bt = self.prefix_block_tokens
            for k, (a, i, o) in enumerate(zip(self.arrival_s.tolist(), self.input_tokens.tolist(),
                                              self.output_tokens.tolist())):
                ids = " ".join(str(x) for x in self.prefix_ids(k).tolist())
                fh.write(f"{a:.6f},{i},{o},{bt},{ids}\n")


def shared_prefix_ids(group: int, num_blocks: int) -> list[int]:
    """Chained block ids of ``num_blocks`` blocks of group ``group``'s shared prompt (opaque ids,
    distinct across groups and positions; the generators and the canonical CSV's
    ``prefix_group``/``prefix_tokens`` columns use them)."""
    base = (group + 1) << 24
    return [base + j for j in range(num_blocks)]
