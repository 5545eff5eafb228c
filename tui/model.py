"""The state the terminal UI shows, computed from bus messages without any UI code.

Every collection here is bounded, so a flood of invocation events costs a
fixed amount of memory. Latency percentiles and the cold-start share are
computed over the last `STATS_WINDOW` finished invocations of each function.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from minicloud.bus import parse_broker_url
from minicloud.protocol import WORKER_STATES

REQUEST_LOG_SIZE = 2000
STATS_WINDOW = 1000
WATTS_HISTORY_SIZE = 120


@dataclass(frozen=True)
class RequestRecord:
    """One finished invocation, as the request log and the drill-down show it."""

    received_at: float
    request_id: str
    function: str
    ok: bool
    error_type: str | None
    start: str | None  # "cold", "warm", or None when the request never ran
    latency_ms: float | None
    cpu_ms: float | None
    energy_j: float | None
    worker_id: str | None

    @property
    def is_cold(self) -> bool:
        return self.start == "cold"


def record_from_event(event: dict[str, Any], received_at: float) -> RequestRecord | None:
    """Build a record from an `events/invocations` payload; return None when it is malformed."""
    function = event.get("function")
    if not isinstance(function, str):
        return None
    report = event.get("report") if isinstance(event.get("report"), dict) else None
    error_type = event.get("error_type")
    return RequestRecord(
        received_at=received_at,
        request_id=str(event.get("id", "")),
        function=function,
        ok=bool(event.get("ok")),
        error_type=str(error_type) if error_type is not None else None,
        start=report.get("start") if report else None,
        latency_ms=latency_of(report) if report else None,
        cpu_ms=_number(report.get("cpu_ms")) if report else None,
        energy_j=_number(report.get("energy_j")) if report else None,
        worker_id=report.get("worker_id") if report else None,
    )


def latency_of(report: dict[str, Any]) -> float | None:
    """Return the time from request arrival to reply: queue wait plus handler duration, in ms.

    The queue wait of a cold start includes starting the worker and running
    its init code, so `init_ms` is not added again.
    """
    duration = _number(report.get("duration_ms"))
    if duration is None:
        return None
    return (_number(report.get("queue_ms")) or 0.0) + duration


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile (`fraction` in 0..1) of `values`, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class FunctionStats:
    """Latency and start kinds of the recent invocations of one function."""

    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    starts: deque[str] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    errors: int = 0

    def add(self, record: RequestRecord) -> None:
        if record.latency_ms is not None:
            self.latencies_ms.append(record.latency_ms)
        if record.start is not None:
            self.starts.append(record.start)
        if not record.ok:
            self.errors += 1

    @property
    def cold_share(self) -> float | None:
        if not self.starts:
            return None
        return sum(1 for start in self.starts if start == "cold") / len(self.starts)

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies_ms, 0.95)


@dataclass(frozen=True)
class PoolRow:
    """The values of one row of the pools table."""

    function: str
    workers_by_state: dict[str, int]
    queued: int
    invocations: int
    cold_share: float | None
    p50_ms: float | None
    p95_ms: float | None
    cpu_ms: float
    energy_j: float
    init_error: str | None


class CloudModel:
    """The latest pools and energy state plus a bounded history of invocations."""

    def __init__(self) -> None:
        self.pools: dict[str, Any] = {}
        self.energy: dict[str, Any] = {}
        self.requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self.stats: dict[str, FunctionStats] = {}
        self.watts_history: deque[float] = deque(maxlen=WATTS_HISTORY_SIZE)
        self.dropped_events = 0

    @property
    def function_names(self) -> list[str]:
        return sorted(self.pools)

    def apply_pools(self, state: dict[str, Any]) -> None:
        functions = state.get("functions")
        self.pools = functions if isinstance(functions, dict) else {}

    def apply_energy(self, state: dict[str, Any]) -> None:
        self.energy = state
        watts = _number(state.get("watts"))
        if watts is not None:
            self.watts_history.append(watts)

    def add_events(self, events: Iterable[dict[str, Any]], received_at: float) -> list[RequestRecord]:
        """Record finished invocations and return the records made from them."""
        records = []
        for event in events:
            record = record_from_event(event, received_at) if isinstance(event, dict) else None
            if record is None:
                continue
            self.requests.append(record)
            self.stats.setdefault(record.function, FunctionStats()).add(record)
            records.append(record)
        return records

    def pool_rows(self) -> list[PoolRow]:
        return [self.pool_row(name) for name in self.function_names]

    def pool_row(self, name: str) -> PoolRow:
        pool = self.pools.get(name, {})
        counts = dict.fromkeys(WORKER_STATES, 0)
        for worker in pool.get("workers", []):
            state = worker.get("state")
            counts[state] = counts.get(state, 0) + 1
        totals = self.energy.get("by_function", {}).get(name, {})
        stats = self.stats.get(name, FunctionStats())
        init_error = pool.get("init_error")
        return PoolRow(
            function=name,
            workers_by_state=counts,
            queued=int(pool.get("queued", 0)),
            invocations=int(totals.get("invocations", len(stats.starts))),
            cold_share=stats.cold_share,
            p50_ms=stats.p50_ms,
            p95_ms=stats.p95_ms,
            cpu_ms=float(totals.get("cpu_ms", 0.0)),
            energy_j=float(totals.get("joules", 0.0)),
            init_error=_describe_error(init_error) if init_error else None,
        )

    def workers_of(self, name: str) -> list[dict[str, Any]]:
        return list(self.pools.get(name, {}).get("workers", []))

    def config_of(self, name: str) -> dict[str, Any]:
        return dict(self.pools.get(name, {}).get("config", {}))

    def recent_requests(self, name: str, limit: int) -> list[RequestRecord]:
        """Return the newest `limit` records of one function, oldest first."""
        found: list[RequestRecord] = []
        for record in reversed(self.requests):
            if record.function == name:
                found.append(record)
                if len(found) == limit:
                    break
        found.reverse()
        return found


def _describe_error(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type')}: {error.get('message')}"
    return str(error)


def matches_filter(record: RequestRecord, text: str) -> bool:
    """Return whether a record matches a request-log filter.

    The filter is a case-insensitive substring of the function name, the
    request id, the start kind, "error", or the error type.
    """
    if not text:
        return True
    needle = text.lower()
    fields = [record.function, record.request_id, record.start or "", record.error_type or ""]
    if not record.ok:
        fields.append("error")
    return any(needle in value.lower() for value in fields)


# After this long without a connection the broker counts as lost, not reconnecting.
LOST_AFTER_S = 10.0


@dataclass
class ConnectionInfo:
    """The broker connection as the status line shows it."""

    state: str = "connecting"  # connecting, connected, reconnecting or stopped
    url: str = ""
    since: float = 0.0
    note: str = ""
    note_is_error: bool = False
    dropped_events: int = 0

    def set_state(self, state: str, url: str, now: float) -> None:
        if state != self.state or not self.since:
            self.since = now
        self.state = state
        self.url = _without_password(url)

    def shown_state(self, now: float) -> str:
        """Return the state to show: a connection that stays down longer than LOST_AFTER_S is "lost"."""
        if self.state in ("connecting", "reconnecting") and now - self.since > LOST_AFTER_S:
            return "lost"
        return self.state


def _without_password(url: str) -> str:
    """Return the broker URL as shown on screen: its password left out."""
    try:
        return str(parse_broker_url(url))
    except ValueError:
        return url
