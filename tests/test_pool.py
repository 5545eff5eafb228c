"""The scheduling rules of one pool, without processes or a broker."""

from __future__ import annotations

from pathlib import Path

from minicloud.manifest import FunctionConfig
from minicloud.pool import Invocation, Pool


def _pool(**settings) -> Pool:
    return Pool(FunctionConfig(name="f", directory=Path("/tmp/f"), **settings))


def _invocation(number: int, now: float = 0.0) -> Invocation:
    return Invocation(f"r{number}", "f", b"{}", received=now, queue_deadline=now + 10)


def test_burst_spawns_at_most_max_concurrency():
    pool = _pool(max_concurrency=3)
    spawned = []
    for number in range(10):
        spawned += pool.submit(_invocation(number), now=0.0).spawns
    assert len(spawned) == 3
    assert repr(pool) == "<Pool f starting=3 idle=0 busy=0 draining=0 queued=10>"


def test_ready_worker_takes_oldest_request():
    pool = _pool()
    (worker,) = pool.submit(_invocation(1), now=0.0).spawns
    pool.submit(_invocation(2), now=0.0)
    plan = pool.worker_ready(worker, init_ms=5.0, now=1.0)
    assert [invocation.request_id for _, invocation in plan.dispatches] == ["r1"]
    assert repr(pool) == "<Pool f starting=1 idle=0 busy=1 draining=0 queued=1>"


def test_warm_worker_is_reused():
    pool = _pool()
    (worker,) = pool.submit(_invocation(1), now=0.0).spawns
    pool.worker_ready(worker, init_ms=1.0, now=0.1)
    pool.worker_done(worker, now=0.2)
    plan = pool.submit(_invocation(2), now=0.3)
    assert plan.spawns == []
    assert plan.dispatches == [(worker, plan.dispatches[0][1])]


def test_full_queue_throttles():
    pool = _pool(max_concurrency=1, queue_size=2)
    pool.submit(_invocation(0), now=0.0)  # held for the one worker being started
    pool.submit(_invocation(1), now=0.0)
    pool.submit(_invocation(2), now=0.0)
    plan = pool.submit(_invocation(3), now=0.0)
    assert [rejection.error_type for rejection in plan.rejections] == ["Throttled"]
    assert len(pool.queue) == 3


def test_disabled_function_throttles():
    plan = _pool(max_concurrency=0).submit(_invocation(1), now=0.0)
    assert plan.rejections[0].error_type == "Throttled"
    assert "disabled" in plan.rejections[0].message


def test_idle_worker_retires_after_keep_warm():
    pool = _pool(keep_warm_s=10)
    (worker,) = pool.submit(_invocation(1), now=0.0).spawns
    pool.worker_ready(worker, init_ms=1.0, now=0.0)
    pool.worker_done(worker, now=1.0)

    plan, next_check = pool.retire_idle(now=5.0)
    assert plan.retirements == []
    assert next_check == 11.0

    plan, next_check = pool.retire_idle(now=11.0)
    assert plan.retirements == [worker]
    assert worker.state == "draining"


def test_min_warm_is_kept_past_keep_warm():
    pool = _pool(min_warm=1, keep_warm_s=1)
    (worker,) = pool.schedule(now=0.0).spawns
    pool.worker_ready(worker, init_ms=1.0, now=0.0)
    plan, _ = pool.retire_idle(now=100.0)
    assert plan.retirements == []


def test_busy_worker_never_retires():
    pool = _pool(keep_warm_s=0)
    (worker,) = pool.submit(_invocation(1), now=0.0).spawns
    pool.worker_ready(worker, init_ms=1.0, now=0.0)
    assert worker.state == "busy"
    plan, _ = pool.retire_idle(now=100.0)
    assert plan.retirements == []


def test_draining_worker_gets_no_request():
    pool = _pool(keep_warm_s=0)
    (worker,) = pool.submit(_invocation(1), now=0.0).spawns
    pool.worker_ready(worker, init_ms=1.0, now=0.0)
    pool.worker_done(worker, now=0.0)
    pool.retire_idle(now=1.0)
    plan = pool.submit(_invocation(2), now=1.0)
    assert plan.dispatches == []
    assert len(plan.spawns) == 1


def test_failed_init_rejects_held_requests_and_backs_off():
    pool = _pool(min_warm=1)
    (worker,) = pool.submit(_invocation(1), now=0.0).spawns
    error = {"type": "ImportModuleError", "message": "No module named 'x'"}
    plan = pool.worker_failed_init(worker, error, now=0.0)
    assert [rejection.error_type for rejection in plan.rejections] == ["ImportModuleError"]
    assert pool.schedule(now=0.5).spawns == []  # min_warm waits for the back-off
    assert len(pool.schedule(now=1.5).spawns) == 1
