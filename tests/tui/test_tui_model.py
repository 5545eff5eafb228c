"""Per-function statistics, request records and connection state, without any UI."""

from __future__ import annotations

import pytest

from tui import model
from tui.model import CloudModel, ConnectionInfo, matches_filter, percentile, record_from_event
from tui_fixtures import NOW, energy_state, event, pools_state, sample_events


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_record_latency_adds_queue_wait() -> None:
    record = record_from_event(event("a", start="cold", duration_ms=0.4, queue_ms=27.0), NOW)
    assert record is not None
    assert record.latency_ms == pytest.approx(27.4)
    assert record.is_cold
    assert record.received_at == NOW


def test_record_of_rejected_request_has_no_report() -> None:
    record = record_from_event({"id": "x", "function": "hello", "ok": False, "error_type": "Throttled", "report": None}, NOW)
    assert record is not None
    assert record.start is None
    assert record.latency_ms is None
    assert record.error_type == "Throttled"


def test_record_of_malformed_event_is_none() -> None:
    assert record_from_event({"id": "x"}, NOW) is None


def test_pool_row_counts_workers_and_stats() -> None:
    cloud = CloudModel()
    cloud.apply_pools(pools_state(queued=3))
    cloud.apply_energy(energy_state())
    cloud.add_events(sample_events(), NOW)

    row = cloud.pool_row("hello")

    assert row.workers_by_state == {"starting": 0, "idle": 1, "busy": 1, "draining": 0}
    assert row.queued == 3
    assert row.invocations == 9
    # Four hello events ran (one cold); the throttled one never started.
    assert row.cold_share == pytest.approx(0.25)
    assert row.p50_ms == pytest.approx(0.32)
    assert row.p95_ms == pytest.approx(27.4)
    assert row.cpu_ms == pytest.approx(3.4)
    assert row.energy_j == pytest.approx(0.0042)


def test_pool_rows_sorted_by_name() -> None:
    cloud = CloudModel()
    cloud.apply_pools(pools_state())
    assert [row.function for row in cloud.pool_rows()] == ["cpu-burn", "hello", "sleep-io"]


def test_request_history_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = CloudModel()
    events = [event(f"id-{i}", duration_ms=float(i)) for i in range(model.REQUEST_LOG_SIZE + 500)]
    cloud.add_events(events, NOW)
    assert len(cloud.requests) == model.REQUEST_LOG_SIZE
    assert cloud.requests[0].request_id == "id-500"
    assert len(cloud.stats["hello"].latencies_ms) == model.STATS_WINDOW


def test_watts_history_is_bounded() -> None:
    cloud = CloudModel()
    for watts in range(model.WATTS_HISTORY_SIZE + 10):
        cloud.apply_energy({"watts": float(watts)})
    assert len(cloud.watts_history) == model.WATTS_HISTORY_SIZE
    assert cloud.watts_history[-1] == float(model.WATTS_HISTORY_SIZE + 9)


def test_recent_requests_of_one_function() -> None:
    cloud = CloudModel()
    cloud.add_events(sample_events(), NOW)
    recent = cloud.recent_requests("hello", 2)
    assert [record.request_id for record in recent] == ["00000004-fail", "00000006-throttled"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", True), ("hello", True), ("HEL", True), ("warm", True), ("cold", False), ("error", True), ("valueerror", True), ("cpu", False)],
)
def test_filter_matches_fields(text: str, expected: bool) -> None:
    record = record_from_event(event("abc", ok=False, error_type="ValueError"), NOW)
    assert record is not None
    assert matches_filter(record, text) is expected


def test_connection_lost_after_long_outage() -> None:
    info = ConnectionInfo()
    info.set_state("reconnecting", "mqtt://127.0.0.1:1", NOW)
    assert info.shown_state(NOW + 1) == "reconnecting"
    assert info.shown_state(NOW + model.LOST_AFTER_S + 1) == "lost"
    info.set_state("connected", "mqtt://127.0.0.1:1", NOW + 20)
    assert info.shown_state(NOW + 100) == "connected"
