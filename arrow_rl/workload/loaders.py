"""Trace loaders: real LLM-serving traces and our canonical CSV, all into one :class:`Workload`.

Formats (detected from the first line of the file when ``format`` is None):

``canonical``  CSV ``arrival_s,input_tokens,output_tokens`` (header required). Arrivals are taken
               as written (not re-based) and must be non-decreasing and >= 0: a decrease is an error
               naming the file and line, because a canonical file is something we wrote ourselves.
               Optional prefix columns (for prefix caching), either ``prefix_group,prefix_tokens``
               (request shares its first ``prefix_tokens`` tokens with every request of the group;
               an empty cell or -1: none) or ``hash_ids`` (space-separated chained block hash ids)
               with ``prefix_block_tokens`` (tokens per id; 16 when the column is absent).
``azure``      Azure LLM inference trace CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``: the 2023
               Splitwise files ("2023-11-16 18:17:03.9799600", 7 fractional digits) and the 2024
               DynamoLLM week-long files ("2024-05-10 00:00:00.009930+00:00", fraction optional).
``mooncake``   Mooncake FAST'25 JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``,
               optional ``hash_ids``: the chained hash ids of the prompt's 512-token blocks, kept as
               the workload's prefixes (prefix caching).
``burstgpt``   BurstGPT CSV ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``
               (v1.2 files add ``Session ID``, ``Elapsed time``; extra columns are ignored).

Real-trace policies (counted in :class:`TraceReport` and logged as a warning, never silent):

* timestamps are re-based so the first request arrives at 0 s;
* rows out of time order are put in order with a stable sort (upstream files are sorted; a sort
  keeps a concatenated or hand-edited file usable) and ``reordered`` counts them;
* BurstGPT rows with zero request or response tokens are failed requests (upstream README) and are
  dropped;
* Azure/Mooncake rows with zero output tokens are clamped to 1 token (the request still ran its
  prefill, which produced one token, so its prefill load is kept); rows with zero input tokens
  are dropped (there is nothing to prefill and a request cannot be empty).

Negative, non-integral, non-finite or unparsable values are a :class:`TraceFormatError` naming
the file, line, field and value.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from arrow_rl.workload.trace_paths import resolve_trace_path
from arrow_rl.workload.workload import Workload, shared_prefix_ids

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("canonical", "azure", "mooncake", "burstgpt")

# Largest token count a row may carry. No model's context comes near 2^31 tokens, so a larger
# value is a data error; refusing it (with file and line) also keeps int64 arithmetic on token
# counts (sums, the latency model's n^2 terms) far from overflow.
MAX_TOKENS = 2**31 - 1

# Required columns per CSV format, in the order (time, input, output); matched case-insensitively.
_CSV_COLUMNS: dict[str, tuple[str, str, str]] = {
    "canonical": ("arrival_s", "input_tokens", "output_tokens"),
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "burstgpt": ("Timestamp", "Request tokens", "Response tokens"),
}
_MOONCAKE_FIELDS: tuple[str, str, str] = ("timestamp", "input_length", "output_length")
MOONCAKE_BLOCK_TOKENS = 512   # Mooncake traces hash prompts in 512-token blocks (FAST'25 trace README)
# optional prefix columns of the canonical CSV
_PREFIX_COLUMNS = ("prefix_group", "prefix_tokens", "hash_ids", "prefix_block_tokens")


class TraceFormatError(ValueError):
    """A trace file that cannot be read as the format it claims; names file, line, field, value."""

    def __init__(self, path: str | Path, message: str, line: int | None = None,
                 field: str | None = None, value: object = None) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.value = value
        where = self.path if line is None else f"{self.path}, line {line}"
        what = "" if field is None else f", field {field!r}"
        got = "" if value is None else f" (got {value!r})"
        super().__init__(f"{where}{what}: {message}{got}")


@dataclass(frozen=True)
class TraceReport:
    """What the loader did to the rows, so nothing is changed silently."""

    path: str
    format: str
    rows_read: int
    rows_kept: int
    dropped: int = 0
    drop_reason: str = ""
    clamped: int = 0
    clamp_reason: str = ""
    reordered: int = 0
    # What was subtracted to start at 0 s: trace-clock seconds, or Unix time for wall-clock traces.
    start_offset_s: float = 0.0

    def notes(self) -> list[str]:
        out = []
        if self.dropped:
            out.append(f"dropped {self.dropped} of {self.rows_read} rows ({self.drop_reason})")
        if self.clamped:
            out.append(f"clamped {self.clamped} rows ({self.clamp_reason})")
        if self.reordered:
            out.append(f"{self.reordered} rows were out of time order and were stably sorted")
        return out


@dataclass(frozen=True)
class LoadedTrace:
    workload: Workload
    report: TraceReport


# --------------------------------------------------------------------------------------- public


def load_workload(path: str | Path, format: str | None = None, name: str | None = None) -> Workload:
    """Load a trace file (or a bundled trace name such as ``azure-conv``) as a :class:`Workload`.

    ``format`` overrides detection. Anything the loader changed (dropped failures, clamped
    outputs, reordered rows) is logged as a warning; use :func:`load_trace` to get the counts.
    """
    return load_trace(path, format=format, name=name).workload


def load_trace(path: str | Path, format: str | None = None, name: str | None = None) -> LoadedTrace:
    """Like :func:`load_workload`, and also return the :class:`TraceReport`."""
    resolved = resolve_trace_path(path)
    extra: dict[str, list[str]] = {}
    try:
        fmt = detect_format(resolved) if format is None else format.strip().lower()
        if fmt not in FORMATS:
            raise ValueError(f"unknown trace format {format!r}; expected one of {', '.join(FORMATS)}")
        if fmt == "mooncake":
            *raw, hashes = _read_mooncake(resolved)
            times, inputs, outputs, lines = _parse_columns(resolved, fmt, *raw)
            prefixes = (hashes, MOONCAKE_BLOCK_TOKENS) if any(hashes) else None
        else:
            times, inputs, outputs, lines = _read_csv_columns(resolved, fmt, extra)
            prefixes = _canonical_prefixes(resolved, extra, inputs, lines) if extra else None
    except UnicodeDecodeError as exc:
        raise TraceFormatError(resolved, f"not a text trace (byte {exc.start} of a line is not UTF-8)") from None
    except csv.Error as exc:
        raise TraceFormatError(resolved, f"not a readable CSV ({exc})") from None
    loaded = _finish(resolved, fmt, times, inputs, outputs, lines,
                     name=name or _default_name(path, resolved), prefixes=prefixes)
    for note in loaded.report.notes():
        logger.warning("%s: %s", resolved, note)
    return loaded


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` from its first non-empty line (CSV header or JSON object)."""
    first = ""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for raw in fh:
            if raw.strip():
                first = raw.strip()
                break
    if not first:
        raise TraceFormatError(path, "file is empty, cannot detect its format")
    if first.startswith("{"):
        try:
            obj = json.loads(first)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(path, f"first line looks like JSON but does not parse: {exc.msg}",
                                   line=1) from None
        except (ValueError, RecursionError) as exc:
            raise TraceFormatError(path, f"first line looks like JSON but does not parse: {exc!s:.120}",
                                   line=1) from None
        if isinstance(obj, dict) and all(k in obj for k in _MOONCAKE_FIELDS):
            return "mooncake"
        raise TraceFormatError(path, "JSONL trace without the Mooncake fields "
                               f"{', '.join(_MOONCAKE_FIELDS)}", line=1, value=sorted(obj)[:8])
    header = {h.strip().lower() for h in next(csv.reader([first]))}
    for fmt, cols in _CSV_COLUMNS.items():
        if all(c.lower() in header for c in cols):
            return fmt
    raise TraceFormatError(
        path, "unrecognised header; expected canonical (arrival_s,input_tokens,output_tokens), "
        "azure (TIMESTAMP,ContextTokens,GeneratedTokens), burstgpt (Timestamp,Model,Request tokens,"
        "Response tokens,...) or a Mooncake JSONL object", line=1, value=first[:120])


# ------------------------------------------------------------------------------------- readers


_CHUNK_ROWS = 1 << 16


def _read_csv_columns(path: Path, fmt: str, extra: dict[str, list[str]] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and parse the (time, input, output) columns of a CSV trace, plus each row's line number.

    Rows are parsed in chunks of 64k, so a multi-million-row trace (BurstGPT, the Azure 2024 week)
    never holds more than one chunk as Python strings. For the canonical format, the optional
    prefix columns present in the header are collected raw into ``extra`` (name → cells).
    """
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = _read_header(path, reader, fmt)
        ncols = len(header)
        lowered = [h.lower() for h in header]
        ti, ii, oi = (lowered.index(col.lower()) for col in _CSV_COLUMNS[fmt])
        opt: list[tuple[int, list[str]]] = []
        if fmt == "canonical" and extra is not None:
            for col in _PREFIX_COLUMNS:
                if col in lowered:
                    extra[col] = []
                    opt.append((lowered.index(col), extra[col]))
        t_col: list[str] = []
        i_col: list[str] = []
        o_col: list[str] = []
        lines: list[int] = []

        def flush() -> None:
            chunks.append(_parse_columns(path, fmt, np.asarray(t_col, dtype=str), np.asarray(i_col, dtype=str),
                                         np.asarray(o_col, dtype=str), np.asarray(lines, dtype=np.int64)))
            t_col.clear(), i_col.clear(), o_col.clear(), lines.clear()

        for row in reader:
            if len(row) != ncols:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                raise TraceFormatError(path, f"expected {ncols} fields as in the header, found {len(row)}",
                                       line=reader.line_num, value=",".join(row)[:120])
            t_col.append(row[ti])
            i_col.append(row[ii])
            o_col.append(row[oi])
            for k, cells in opt:
                cells.append(row[k])
            lines.append(reader.line_num)
            if len(lines) >= _CHUNK_ROWS:
                flush()
        if lines:
            flush()
    if not chunks:
        raise TraceFormatError(path, "trace has a header but no rows")
    return tuple(np.concatenate(parts) for parts in zip(*chunks))  # type: ignore[return-value]


def _read_header(path: Path, reader, fmt: str) -> list[str]:
    """The CSV's header (its first non-blank row, cells stripped), checked for the columns ``fmt``
    requires (matched case-insensitively)."""
    for row in reader:
        if row and any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            break
    else:
        raise TraceFormatError(path, "file is empty (no header line)")
    lowered = [h.lower() for h in header]
    for col in _CSV_COLUMNS[fmt]:
        if col.lower() not in lowered:
            raise TraceFormatError(path, f"header lacks column {col!r} required by the {fmt} format",
                                   line=reader.line_num, value=",".join(header))
    return header


def _read_mooncake(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """Read Mooncake JSONL; values come back as float arrays (timestamps still in ms), plus each
    row's ``hash_ids`` (empty where absent)."""
    t: list[float] = []
    i: list[float] = []
    o: list[float] = []
    lines: list[int] = []
    hashes: list[list[int]] = []
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise TraceFormatError(path, f"invalid JSON: {exc.msg}", line=lineno,
                                       value=raw.strip()[:80]) from None
            except RecursionError:
                raise TraceFormatError(path, "JSON nested too deeply", line=lineno) from None
            except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
                raise TraceFormatError(path, f"invalid JSON: {exc}", line=lineno) from None
            if not isinstance(obj, dict):
                raise TraceFormatError(path, "expected a JSON object per line", line=lineno,
                                       value=raw.strip()[:80])
            vals = []
            for key in _MOONCAKE_FIELDS:
                if key not in obj:
                    raise TraceFormatError(path, "missing field", line=lineno, field=key)
                v = obj[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TraceFormatError(path, "expected a number", line=lineno, field=key, value=v)
                try:
                    vals.append(float(v))
                except OverflowError:  # a JSON integer beyond float range
                    raise TraceFormatError(path, "number out of range", line=lineno, field=key,
                                           value=f"{str(v)[:20]}... ({len(str(v))} digits)") from None
            ids = obj.get("hash_ids", [])
            if not isinstance(ids, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
                raise TraceFormatError(path, "expected a list of integers", line=lineno, field="hash_ids",
                                       value=str(ids)[:80])
            t.append(vals[0])
            i.append(vals[1])
            o.append(vals[2])
            lines.append(lineno)
            hashes.append(ids)
    if not lines:
        raise TraceFormatError(path, "trace has no rows")
    return (np.asarray(t), np.asarray(i), np.asarray(o), np.asarray(lines, dtype=np.int64), hashes)


def _canonical_prefixes(path: Path, extra: dict[str, list[str]], inputs: np.ndarray,
                        lines: np.ndarray) -> tuple[list[list[int]], int]:
    """The canonical CSV's optional prefix columns → (chained block ids per row, tokens per id)."""
    def ints(col: str, k: int, default: int | None) -> int | None:
        cell = extra[col][k].strip()
        if not cell:
            return default
        try:
            return int(cell)
        except ValueError:
            raise TraceFormatError(path, "expected an integer", line=int(lines[k]), field=col, value=cell) from None

    n = len(inputs)
    if "hash_ids" in extra:
        if "prefix_group" in extra or "prefix_tokens" in extra:
            raise TraceFormatError(path, "give either hash_ids or prefix_group/prefix_tokens, not both")
        block = 16
        if "prefix_block_tokens" in extra:
            sizes = {ints("prefix_block_tokens", k, 16) for k in range(n)}
            if len(sizes) != 1 or min(sizes) < 1:
                raise TraceFormatError(path, "prefix_block_tokens must be one positive value for the whole file",
                                       field="prefix_block_tokens", value=sorted(sizes)[:5])
            block = sizes.pop()
        ids = []
        for k in range(n):
            try:
                ids.append([int(x) for x in extra["hash_ids"][k].split()])
            except ValueError:
                raise TraceFormatError(path, "expected space-separated integers", line=int(lines[k]),
                                       field="hash_ids", value=extra["hash_ids"][k][:80]) from None
        return ids, block
    if ("prefix_group" in extra) != ("prefix_tokens" in extra):
        raise TraceFormatError(path, "give both prefix_group and prefix_tokens columns, or neither")
    if "prefix_group" not in extra:
        return [[] for _ in range(n)], 16
    ids = []
    for k in range(n):
        g = ints("prefix_group", k, -1)
        tok = ints("prefix_tokens", k, 0)
        if tok < 0 or (g >= 0 and tok > inputs[k]):
            raise TraceFormatError(path, f"prefix_tokens must be between 0 and input_tokens ({int(inputs[k])})",
                                   line=int(lines[k]), field="prefix_tokens", value=tok)
        ids.append(shared_prefix_ids(g, tok // 16) if g >= 0 else [])
    return ids, 16


# ----------------------------------------------------------------------------------- parsing


def _to_float(path: Path, raw: np.ndarray, lines: np.ndarray, field: str) -> np.ndarray:
    """Vectorised float parse; on failure find the first bad row and name it."""
    if raw.dtype.kind == "f":
        values = raw
    else:
        try:
            values = np.char.strip(raw).astype(np.float64)
        except ValueError:
            for k, cell in enumerate(raw.tolist()):
                try:
                    float(cell)
                except ValueError:
                    raise TraceFormatError(path, "not a number", line=int(lines[k]), field=field,
                                           value=cell) from None
            raise
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise TraceFormatError(path, "not a finite number", line=int(lines[k]), field=field,
                               value=_cell(raw, k))
    return values


def _to_tokens(path: Path, raw: np.ndarray, lines: np.ndarray, field: str) -> np.ndarray:
    """Token counts: finite, integral, 0..MAX_TOKENS (checked in float64, before the int64 cast
    that would wrap a value >= 2^63 to a negative one)."""
    values = _to_float(path, raw, lines, field)
    bad = (values < 0) | (values != np.floor(values))
    if bad.any():
        k = int(np.argmax(bad))
        raise TraceFormatError(path, "token count must be a non-negative integer", line=int(lines[k]),
                               field=field, value=_cell(raw, k))
    huge = values > MAX_TOKENS
    if huge.any():
        k = int(np.argmax(huge))
        raise TraceFormatError(path, f"token count exceeds the limit of {MAX_TOKENS:,}", line=int(lines[k]),
                               field=field, value=_cell(raw, k))
    return values.astype(np.int64)


def _wallclock_ns(path: Path, raw: np.ndarray, lines: np.ndarray, field: str) -> np.ndarray:
    """Parse ISO wall-clock timestamps ('2023-11-16 18:17:03.9799600', optional '+00:00'/'Z').

    Vectorised: numpy's datetime64 parser takes any number of fractional digits; a UTC offset is
    split off (numpy has no time zones) and subtracted so mixed offsets still order correctly.
    Returns UTC nanoseconds since the Unix epoch (int64).
    """
    s = np.char.strip(raw)
    offset_ns = np.zeros(s.shape, dtype=np.int64)
    has_z = np.char.endswith(s, "Z")
    if has_z.any():
        s = np.where(has_z, np.char.rstrip(s, "Z"), s)
    # A '+' or '-' after the seconds field (index >= 19) starts a UTC offset.
    plus = np.char.find(s, "+", 19) >= 0
    minus = np.char.find(s, "-", 19) >= 0
    for mask, sign, split in ((plus, 1, np.char.partition), (minus, -1, np.char.rpartition)):
        if not mask.any():
            continue
        parts = split(s[mask], "+" if sign > 0 else "-")
        body, tail = parts[:, 0], parts[:, 2]
        tz = np.empty(tail.shape, dtype=np.int64)
        for text in np.unique(tail).tolist():
            tz[tail == text] = sign * _parse_utc_offset_ns(path, text, lines, mask, tail)
        s = s.copy()
        s[mask] = body
        offset_ns[mask] = tz
    try:
        stamps = s.astype("datetime64[ns]")
        bad_rows = [int(k) for k in np.flatnonzero(np.isnat(stamps))]
    except ValueError:
        # Slow path, only to name the first offending row.
        bad_rows = [k for k, cell in enumerate(s.tolist()) if not _is_timestamp(cell)] or [0]
    if bad_rows:
        k = bad_rows[0]
        raise TraceFormatError(path, "not a timestamp like '2023-11-16 18:17:03.9799600'",
                               line=int(lines[k]), field=field, value=_cell(raw, k))
    return stamps.astype(np.int64) - offset_ns


def _is_timestamp(cell: str) -> bool:
    try:
        return not np.isnat(np.datetime64(cell, "ns"))
    except ValueError:
        return False


def _parse_utc_offset_ns(path: Path, text: str, lines: np.ndarray, mask: np.ndarray,
                         tail: np.ndarray) -> int:
    digits = text.replace(":", "")
    if len(digits) in (2, 4) and digits.isdigit():
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours <= 23 and minutes <= 59:
            return (hours * 3600 + minutes * 60) * 1_000_000_000
    k = int(np.flatnonzero(mask)[int(np.argmax(tail == text))])
    raise TraceFormatError(path, "bad UTC offset in timestamp", line=int(lines[k]), value=text)


def _cell(raw: np.ndarray, k: int) -> object:
    v = raw[k]
    return v.item() if hasattr(v, "item") else v


# ------------------------------------------------------------------------------------ finish


def _parse_columns(path: Path, fmt: str, t_raw: np.ndarray, i_raw: np.ndarray, o_raw: np.ndarray,
                   lines: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw cells -> (time, input tokens, output tokens, lines). Time is UTC ns (int64) for the
    wall-clock Azure format and seconds (float64) otherwise."""
    in_field, out_field = _TOKEN_FIELDS[fmt]
    inputs = _to_tokens(path, i_raw, lines, in_field)
    outputs = _to_tokens(path, o_raw, lines, out_field)
    if fmt == "azure":
        times = _wallclock_ns(path, t_raw, lines, _TIME_FIELD[fmt])
    else:
        times = _to_float(path, t_raw, lines, _TIME_FIELD[fmt])
        if fmt == "mooncake":
            times = times / 1000.0  # Mooncake timestamps are milliseconds
    return times, inputs, outputs, lines


_TOKEN_FIELDS = {
    "canonical": ("input_tokens", "output_tokens"),
    "azure": ("ContextTokens", "GeneratedTokens"),
    "mooncake": ("input_length", "output_length"),
    "burstgpt": ("Request tokens", "Response tokens"),
}
_TIME_FIELD = {"canonical": "arrival_s", "azure": "TIMESTAMP", "mooncake": "timestamp",
               "burstgpt": "Timestamp"}


def _finish(path: Path, fmt: str, times: np.ndarray, inputs: np.ndarray, outputs: np.ndarray,
            lines: np.ndarray, name: str, prefixes: tuple[list[list[int]], int] | None = None) -> LoadedTrace:
    """Parsed columns → the workload and its report, under the module docstring's policies."""
    rows_read = int(inputs.size)
    arrival, epoch = _arrivals(path, fmt, times, lines)
    keep, outputs, drops, clamps = _row_policies(path, fmt, inputs, outputs, lines)
    (dropped, drop_reason), (clamped, clamp_reason) = drops, clamps
    if not keep.all():
        arrival, inputs, outputs = arrival[keep], inputs[keep], outputs[keep]
        if prefixes is not None:
            prefixes = ([x for x, k in zip(prefixes[0], keep.tolist()) if k], prefixes[1])
    if arrival.size == 0:
        raise TraceFormatError(path, f"no usable rows left after dropping {dropped} ({drop_reason})")

    reordered = 0
    start = 0.0
    if fmt != "canonical":
        if np.any(np.diff(arrival) < 0):
            order = np.argsort(arrival, kind="stable")
            reordered = int(np.count_nonzero(order != np.arange(order.size)))
            arrival, inputs, outputs = arrival[order], inputs[order], outputs[order]
            if prefixes is not None:
                prefixes = ([prefixes[0][k] for k in order.tolist()], prefixes[1])
        start = float(arrival[0])
        arrival = arrival - start

    report = TraceReport(path=str(path), format=fmt, rows_read=rows_read, rows_kept=int(arrival.size),
                         dropped=dropped, drop_reason=drop_reason if dropped else "",
                         clamped=clamped, clamp_reason=clamp_reason if clamped else "",
                         reordered=reordered, start_offset_s=epoch + start)
    workload = Workload(arrival, inputs, outputs, name=name, source=str(path))
    if prefixes is not None and any(prefixes[0]):
        try:
            workload = workload.with_prefix_hashes(prefixes[0], prefixes[1])
        except ValueError as exc:
            raise TraceFormatError(path, str(exc), field="hash_ids") from None
    return LoadedTrace(workload=workload, report=report)


def _arrivals(path: Path, fmt: str, times: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, float]:
    """Arrival seconds from the time column (wall-clock Azure stamps: since the first one, which
    is returned as the epoch) and, for a canonical file, checked to be >= 0 and non-decreasing."""
    tfield = _TIME_FIELD[fmt]
    epoch = 0.0
    if fmt == "azure":
        # Subtract in int64 ns so float64 seconds keep sub-microsecond resolution.
        base = int(times.min())
        arrival = (times - base).astype(np.float64) / 1e9
        epoch = base / 1e9
    else:
        arrival = times
    if fmt == "canonical":
        neg = arrival < 0
        if neg.any():
            k = int(np.argmax(neg))
            raise TraceFormatError(path, "arrival must be >= 0", line=int(lines[k]), field=tfield,
                                   value=float(arrival[k]))
        dec = np.diff(arrival) < 0
        if dec.any():
            k = int(np.argmax(dec)) + 1
            raise TraceFormatError(
                path, f"arrivals must be non-decreasing; previous row (line {int(lines[k - 1])}) "
                f"arrives at {float(arrival[k - 1])!r}", line=int(lines[k]), field=tfield,
                value=float(arrival[k]))
    return arrival, epoch


def _row_policies(path: Path, fmt: str, inputs: np.ndarray, outputs: np.ndarray, lines: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, str], tuple[int, str]]:
    """The rows to keep, the output tokens (clamped), and (count, reason) of the rows dropped and
    of those clamped; a canonical file's empty requests are an error instead."""
    in_field, out_field = _TOKEN_FIELDS[fmt]
    rows_read = int(inputs.size)
    keep = np.ones(rows_read, dtype=bool)
    dropped, drop_reason, clamped, clamp_reason = 0, "", 0, ""
    if fmt == "canonical":
        zero = (inputs < 1) | (outputs < 1)
        if zero.any():
            k = int(np.argmax(zero))
            field = in_field if inputs[k] < 1 else out_field
            raise TraceFormatError(path, "token counts must be >= 1", line=int(lines[k]), field=field,
                                   value=int(inputs[k] if field == in_field else outputs[k]))
    elif fmt == "burstgpt":
        # BurstGPT README: rows whose response (or request) tokens are 0 are failed requests.
        keep = (inputs > 0) & (outputs > 0)
        dropped = int(rows_read - keep.sum())
        drop_reason = "zero request or response tokens: failed requests"
    else:  # azure, mooncake
        keep = inputs > 0
        dropped = int(rows_read - keep.sum())
        drop_reason = "zero input tokens: nothing to prefill"
        zero_out = keep & (outputs == 0)
        clamped = int(zero_out.sum())
        clamp_reason = "zero output tokens set to 1: the prefill still produces one token"
        outputs = np.where(zero_out, 1, outputs)
    return keep, outputs, (dropped, drop_reason), (clamped, clamp_reason)


def _default_name(given: str | Path, resolved: Path) -> str:
    text = str(given)
    return text if resolved.name != Path(text).name else resolved.stem

