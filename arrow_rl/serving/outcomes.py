"""How a client request ends: latency metrics, a ``RequestRecord``, an ``/events`` ``finish``
event and a journal line (batched, written off the request path).

The journal's 200 means the client took the answer: a whole response is journaled once it has
left the router's buffer, a stream once its end has (else 499, with the reason).
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import IO, Any

import orjson

from arrow_rl.cluster.base import RequestRecord
from arrow_rl.cluster.live.state import RouterState
from arrow_rl.serving.config import RouterConfig
from arrow_rl.serving.flight import FLIGHT_TIMES, Flight, Reply, error_reply, xid_header
from arrow_rl.serving.router_metrics import RouterMetrics


class Outcomes:
    """The router's request outcomes (a part of :class:`arrow_rl.serving.router.Router`; it reads
    and sets the attributes annotated here, which the router creates)."""

    config: RouterConfig
    state: RouterState
    metrics: RouterMetrics
    records: collections.deque[RequestRecord]
    completed: int
    _journal: IO[bytes] | None
    _journal_lines: list[bytes]

    def _finish_ok(self, f: Flight) -> None:
        f.status = 200
        if not math.isnan(f.first_token_s):
            self.metrics.ttft.observe(max(0.0, f.first_token_s - f.arrival_s))
            if f.output_tokens > 1:
                self.metrics.tpot.observe(max(0.0, (f.finish_s - f.first_token_s) / (f.output_tokens - 1)))
        self._record(f, rejected=False)

    def _finish_error(self, f: Flight, status: int, message: str, upstream: Any = None) -> Reply:
        f.status, f.error = status, message
        f.finish_s = self.state.now()
        self._record(f, rejected=True)
        if status >= 400 and isinstance(upstream, dict) and "error" in upstream:
            # The engine's own answer to this request (vLLM's error object): the client's error.
            return Reply(status, orjson.dumps(upstream), xid_header(f.x_request_id))
        return error_reply(status if status >= 400 else 502, message)

    def _client_gone(self, f: Flight) -> None:
        """Journal a request whose client disconnected before its answer (its legs were cancelled)."""
        f.status, f.error = 499, "client disconnected"
        f.finish_s = self.state.now()
        self._record(f, rejected=True)

    def _reply_sent(self, f: Flight, delivered: bool, reason: str) -> None:
        """Journal a whole 200 response: ok once it left the router's buffer, else 499."""
        if delivered:
            self._finish_ok(f)
        else:
            f.status, f.error = 499, f"{reason} before the response left the router"
            self._record(f, rejected=True)

    def _record(self, f: Flight, rejected: bool) -> None:
        self.metrics.count_request("error" if rejected else "ok", f.path or "none")
        rec = RequestRecord(
            request_id=f.request_id, arrival_s=f.arrival_s, input_tokens=f.input_tokens,
            output_tokens=f.output_tokens, prefill_instance=f.prefill_instance if f.prefill_instance >= 0 else f.decode_instance,
            decode_instance=f.decode_instance, first_token_s=f.first_token_s if not rejected else math.nan,
            finish_s=f.finish_s if not rejected else math.nan, rejected=rejected, reject_reason=f.error,
        )
        self.records.append(rec)
        self.completed += 1
        entry = dict(f.__dict__)
        for k in FLIGHT_TIMES:
            if entry[k] != entry[k]:  # NaN: JSON has none
                entry[k] = None
        entry["notes"] = list(f.notes)
        if self._journal:
            self._journal_lines.append(orjson.dumps(entry) + b"\n")
        entry["t"] = f.finish_s  # the event is the journal line plus its time (not copied again)
        self.state.log_event("finish", entry)

    # ---- the journal file ---------------------------------------------------------------------
    async def _journal_loop(self) -> None:
        """Journal lines are batched and written in a worker thread, never on the request path."""
        while True:
            await asyncio.sleep(self.config.journal_flush_s)
            if self._journal_lines:
                lines, self._journal_lines = self._journal_lines, []
                await asyncio.to_thread(self._write_journal, lines)

    def _write_journal(self, lines: list[bytes]) -> None:
        assert self._journal is not None
        self._journal.write(b"".join(lines))
        self._journal.flush()

    def _flush_journal(self) -> None:
        if self._journal_lines:
            lines, self._journal_lines = self._journal_lines, []
            self._write_journal(lines)
