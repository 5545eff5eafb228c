"""The controller: owns every pool and every worker process.

    gateway.submit() -> Pool.submit() -> Plan -> _carry_out(): spawn / send / reject / retire
    worker pipe: ready | init_error | done  -> Pool.worker_*() -> Plan -> _carry_out()
    worker exit (from the fork server)      -> Pool.worker_exited() -> reply to its request, heal
    timers: invocation timeout, init timeout (10 s), keep-warm expiry, SIGKILL after drain

Everything runs on one event loop, so the pools need no locks. Forking
happens in the fork server process, and the loop awaits its reply. The
controller completes each invocation once, through the `on_complete`
callback that the gateway gives it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from minicloud import errors
from minicloud.energy import EnergyModel
from minicloud.forkserver import ForkServer
from minicloud.manifest import MAX_CONCURRENCY, FunctionConfig
from minicloud.memory_watch import MemoryWatch
from minicloud.pool import Invocation, Plan, Pool, Rejection, WorkerRecord
from minicloud.protocol import Report, billed_ms
from minicloud.workers import WorkerProcess, describe_exit

log = logging.getLogger(__name__)

# Module-level code of a function gets at most this long, as in AWS Lambda.
INIT_TIMEOUT_S = 10.0
# A draining worker gets SIGTERM, then SIGKILL after this grace period.
DRAIN_GRACE_S = 2.0
LOG_LINES_KEPT = 1000


@dataclass
class Outcome:
    """The end of an invocation, with what the gateway needs for the reply and the event."""

    ok: bool
    result_json: bytes = b"null"
    error: dict[str, Any] | None = None
    report: dict[str, Any] | None = None


CompleteCallback = Callable[[Invocation, Outcome], None]


class Controller:
    """Pools of workers for every deployed function."""

    def __init__(
        self,
        *,
        on_complete: CompleteCallback,
        on_pools_changed: Callable[[], None] = lambda: None,
        on_logs: Callable[[str, list[dict[str, Any]]], None] = lambda function, lines: None,
        energy_model: EnergyModel | None = None,
    ) -> None:
        self.pools: dict[str, Pool] = {}
        self.energy_model = energy_model or EnergyModel()
        self._on_complete = on_complete
        self._on_pools_changed = on_pools_changed
        self._on_logs = on_logs
        self._processes: dict[str, WorkerProcess] = {}
        self._records: dict[str, tuple[Pool, WorkerRecord]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._retire_timers: dict[str, asyncio.TimerHandle] = {}
        self._logs: dict[str, deque[dict[str, Any]]] = {}
        self._scaled: dict[str, dict[str, int]] = {}
        # pid -> psutil's CPU milliseconds of the whole worker process, set by the cloud's meter.
        self.measured_cpu_ms: Callable[[int | None], float | None] = lambda pid: None
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._memory = MemoryWatch(self._loop, self._memory_exceeded)
        self.fork_server = ForkServer()
        self.totals: dict[str, dict[str, float]] = {}

    def __repr__(self) -> str:
        return f"<Controller functions={len(self.pools)} workers={len(self._processes)}>"

    # -- functions -----------------------------------------------------------

    def deploy(self, config: FunctionConfig) -> str:
        """Add a function or update it; return "created" or "updated"."""
        pool = self.pools.get(config.name)
        if pool is None:
            pool = Pool(config)
            self.pools[config.name] = pool
            self._logs[config.name] = deque(maxlen=LOG_LINES_KEPT)
            self.totals.setdefault(config.name, {"invocations": 0, "cpu_ms": 0.0, "joules": 0.0})
            log.info("function %s deployed from %s", config.name, config.directory)
            self._carry_out(pool, pool.schedule(time.monotonic()))
            self._changed()
            return "created"
        scaled = self._scaled.get(config.name)
        if scaled:
            config = dataclasses.replace(config, **scaled)
        log.info("function %s updated from %s; warm workers drain", config.name, config.directory)
        self._carry_out(pool, pool.update(config, new_code=True))
        self._changed()
        return "updated"

    def scale(self, name: str, *, min_warm: int | None, max_concurrency: int | None) -> FunctionConfig:
        """Set min_warm and max_concurrency; raise PlatformError for an unknown function or invalid values."""
        pool = self._pool(name)
        new_min = pool.config.min_warm if min_warm is None else min_warm
        new_max = pool.config.max_concurrency if max_concurrency is None else max_concurrency
        if min_warm is None and new_min > new_max:
            new_min = new_max  # Lowering the ceiling alone takes the floor down with it.

        if new_min < 0 or new_max < 0:
            raise errors.PlatformError(errors.INVALID_REQUEST, f"--min and --max must be 0 or more, got {new_min} and {new_max}")
        if new_max > MAX_CONCURRENCY:
            raise errors.PlatformError(
                errors.INVALID_REQUEST, f"--max {new_max} is over the limit of {MAX_CONCURRENCY} workers a function"
            )
        if new_min > new_max:
            raise errors.PlatformError(
                errors.INVALID_REQUEST, f"--min {new_min} is more than --max {new_max}; lower --min or raise --max"
            )
        config = dataclasses.replace(pool.config, min_warm=new_min, max_concurrency=new_max)
        # A later deploy of new code keeps these, as a code update in AWS Lambda
        # keeps the function's concurrency settings.
        self._scaled[name] = {"min_warm": new_min, "max_concurrency": new_max}

        plan = pool.update(config, new_code=False)
        # Lowering max_concurrency drains idle workers above the new ceiling.
        extra = pool.active_count - new_max
        for worker in sorted(pool.workers.values(), key=lambda worker: worker.idle_since):
            if extra <= 0:
                break
            if worker.state == "idle":
                worker.set_state("draining")
                plan.retirements.append(worker)
                extra -= 1

        if new_max == 0:
            plan.extend(pool.reject_queue(
                errors.THROTTLED, f"function {name!r} was disabled (max_concurrency set to 0) while this request waited",
            ))
        log.info("function %s scaled: min_warm=%d max_concurrency=%d", name, new_min, new_max)
        self._carry_out(pool, plan)
        self._changed()
        return config

    def remove(self, name: str) -> None:
        pool = self._pool(name)
        plan = pool.retire_all()
        self._carry_out(pool, plan)
        del self.pools[name]
        self._scaled.pop(name, None)
        log.info("function %s removed", name)
        self._changed()

    def logs(self, name: str, limit: int) -> list[dict[str, Any]]:
        self._pool(name)
        lines = list(self._logs.get(name, ()))
        return lines[-limit:] if limit > 0 else lines

    def has_function(self, name: str) -> bool:
        return name in self.pools

    def _pool(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            known = ", ".join(sorted(self.pools)) or "none"
            raise errors.PlatformError(errors.FUNCTION_NOT_FOUND, f"function {name!r} not found; deployed functions: {known}")
        return pool

    # -- invocations ---------------------------------------------------------

    def submit(self, invocation: Invocation) -> None:
        """Run an invocation; its outcome arrives later through on_complete."""
        pool = self.pools.get(invocation.function)
        if pool is None:
            self._reject(Rejection(invocation, errors.FUNCTION_NOT_FOUND, f"function {invocation.function!r} not found"))
            return
        if self._stopping:
            self._reject(Rejection(invocation, errors.UNAVAILABLE, "the cloud is shutting down; retry against a running cloud"))
            return
        plan = pool.submit(invocation, time.monotonic())
        if invocation.dispatched is None and not invocation.answered and invocation in pool.queue:
            delay = max(0.0, invocation.queue_deadline - time.monotonic())
            self._timers[f"queue:{invocation.request_id}"] = self._loop.call_later(delay, self._expire, pool, invocation)
        self._carry_out(pool, plan)

    def _expire(self, pool: Pool, invocation: Invocation) -> None:
        self._timers.pop(f"queue:{invocation.request_id}", None)
        self._carry_out(pool, pool.expire(invocation))

    # -- carrying out a plan -------------------------------------------------

    def _carry_out(self, pool: Pool, plan: Plan) -> None:
        for rejection in plan.rejections:
            self._reject(rejection)
        for worker in plan.retirements:
            self._retire(worker)
        for worker in plan.spawns:
            self._spawn(pool, worker)
        for worker, invocation in plan.dispatches:
            self._dispatch(pool, worker, invocation)
        if plan.rejections or plan.retirements or plan.spawns or plan.dispatches:
            self._changed()
        self._schedule_retirement(pool)

    def _reject(self, rejection: Rejection) -> None:
        invocation = rejection.invocation
        self._cancel_timer(f"queue:{invocation.request_id}")
        error = errors.platform_error(rejection.error_type, rejection.message)
        self._complete(invocation, Outcome(ok=False, error=error))

    def _spawn(self, pool: Pool, worker: WorkerRecord) -> None:
        process = WorkerProcess(worker.id, pool.config, self.fork_server)
        self._processes[worker.id] = process
        self._records[worker.id] = (pool, worker)
        log.info("worker %s of %s starting (cold start)", worker.id, pool.config.name)
        task = self._loop.create_task(self._start_process(pool, worker, process))
        task.add_done_callback(_log_task_failure)

    async def _start_process(self, pool: Pool, worker: WorkerRecord, process: WorkerProcess) -> None:
        try:
            await process.spawn()
        except Exception as exc:
            log.error("worker %s of %s could not be started: %s", worker.id, pool.config.name, exc)
            self._processes.pop(worker.id, None)
            self._records.pop(worker.id, None)
            error = errors.platform_error(errors.UNAVAILABLE, f"starting a worker of {pool.config.name!r} failed: {exc}")
            self._carry_out(pool, pool.worker_failed_init(worker, error, time.monotonic()))
            return
        worker.pid = process.pid
        if worker.state == "draining":
            # Retired (removed or scaled down) while it was being forked.
            process.watch(self._loop, self._on_worker_message, self._on_worker_exit)
            process.kill()
            return
        process.watch(self._loop, self._on_worker_message, self._on_worker_exit)
        self._timers[f"init:{worker.id}"] = self._loop.call_later(INIT_TIMEOUT_S, self._init_timed_out, worker.id)
        self._changed()

    def _dispatch(self, pool: Pool, worker: WorkerRecord, invocation: Invocation) -> None:
        self._cancel_timer(f"queue:{invocation.request_id}")
        process = self._processes[worker.id]
        timeout_s = pool.config.timeout_s
        try:
            process.send_invoke(invocation.request_id, int(timeout_s * 1000), invocation.request_json)
        except (OSError, ValueError) as exc:
            # The worker is dying, and its exit handler replies to the invocation as a crash.
            log.warning("sending request %s to worker %s failed: %s", invocation.request_id, worker.id, exc)
            return
        self._timers[f"run:{worker.id}"] = self._loop.call_later(timeout_s, self._invocation_timed_out, worker.id)
        self._memory.watch(worker.id, process.pid, pool.config.memory_mb)

    def _retire(self, worker: WorkerRecord) -> None:
        process = self._processes.get(worker.id)
        if process is None or process.pid is None:
            return  # Still forking; _start_process kills it when the fork returns.
        log.info("worker %s pid %s draining (idle since %.1f s)", worker.id, worker.pid, time.monotonic() - worker.idle_since)
        self._cancel_timer(f"init:{worker.id}")
        process.terminate()
        self._timers[f"kill:{worker.id}"] = self._loop.call_later(DRAIN_GRACE_S, process.kill)

    def _schedule_retirement(self, pool: Pool) -> None:
        name = pool.config.name
        handle = self._retire_timers.get(name)
        if handle is not None:
            if handle.when() <= self._loop.time() + pool.config.keep_warm_s:
                # It fires no later than any worker idle from now could expire,
                # and checks again then: cheaper than a new timer per invocation.
                return
            handle.cancel()
            del self._retire_timers[name]
        if self._stopping or name not in self.pools:
            return
        plan, next_check = pool.retire_idle(time.monotonic())
        if plan.retirements:
            for worker in plan.retirements:
                self._retire(worker)
            self._changed()
        if next_check is not None:
            delay = max(0.0, next_check - time.monotonic()) + 0.001
            self._retire_timers[name] = self._loop.call_later(delay, self._retirement_due, name)

    def _retirement_due(self, name: str) -> None:
        # Looked up by name: the function may have been removed or deployed anew since.
        self._retire_timers.pop(name, None)
        pool = self.pools.get(name)
        if pool is not None:
            self._schedule_retirement(pool)

    # -- events from workers -------------------------------------------------

    def _on_worker_message(self, process: WorkerProcess, header: dict[str, Any], body: bytes) -> None:
        entry = self._records.get(process.id)
        if entry is None:
            return
        pool, worker = entry
        kind = header.get("t")
        now = time.monotonic()
        if kind == "ready":
            self._cancel_timer(f"init:{worker.id}")
            self._store_logs(pool.config.name, None, header.get("logs", []), 0)
            log.info("worker %s pid %s ready in %.1f ms (init)", worker.id, worker.pid, header["init_ms"])
            worker.init_cpu_ms = header.get("init_cpu_ms", 0.0)
            if worker.state == "starting":
                self._carry_out(pool, pool.worker_ready(worker, header["init_ms"], now))
            self._changed()
        elif kind == "init_error":
            self._cancel_timer(f"init:{worker.id}")
            self._store_logs(pool.config.name, None, header.get("logs", []), 0)
            error = header["error"]
            log.error("worker %s of %s failed its init phase: %s", worker.id, pool.config.name, error["message"])
            worker.set_state("draining")
            self._carry_out(pool, pool.worker_failed_init(worker, error, now))
        elif kind == "done":
            self._finish(pool, worker, header, body, now)
        else:
            log.error("worker %s sent an unknown message type %r", worker.id, kind)

    def _finish(self, pool: Pool, worker: WorkerRecord, header: dict[str, Any], body: bytes, now: float) -> None:
        self._cancel_timer(f"run:{worker.id}")
        self._memory.unwatch(worker.id)
        invocation = worker.current
        if invocation is None:
            return
        cpu_ms = header["cpu_ms"]
        duration_ms = header["duration_ms"]
        worker.cpu_ms += cpu_ms
        worker.rss_mb = header["max_rss_mb"]
        report = self._report(pool, worker, invocation, duration_ms=duration_ms, cpu_ms=cpu_ms)
        self._store_logs(pool.config.name, invocation.request_id, header.get("logs", []), header.get("logs_dropped", 0))
        if header["ok"]:
            outcome = Outcome(ok=True, result_json=body or b"null", report=report)
        else:
            outcome = Outcome(ok=False, error=header["error"], report=report)
        plan = pool.worker_done(worker, now, exiting=bool(header.get("exiting")))
        self._complete(invocation, outcome)
        self._carry_out(pool, plan)
        self._changed()

    def _on_worker_exit(self, process: WorkerProcess, exit_code: int) -> None:
        self._processes.pop(process.id, None)
        self._memory.unwatch(process.id)
        entry = self._records.pop(process.id, None)
        for prefix in ("init", "run", "kill"):
            self._cancel_timer(f"{prefix}:{process.id}")
        if entry is None:
            return
        pool, worker = entry
        how = describe_exit(exit_code)
        state = worker.state
        if state == "draining" and worker.current is None:
            log.info("worker %s pid %s of %s stopped (%s)", worker.id, process.pid, pool.config.name, how)
        elif worker.killed:
            log.warning("worker %s pid %s of %s killed for its timeout or memory limit", worker.id, process.pid, pool.config.name)
        else:
            log.error("worker %s pid %s of %s %s while %s", worker.id, process.pid, pool.config.name, how, state)

        if state == "starting":
            # Fail the held requests before anything else: a replacement
            # started first would fail the same way, in a loop of forks.
            error = errors.platform_error(
                errors.WORKER_CRASHED, f"a worker of {pool.config.name!r} {how} during its init phase"
            )
            plan = pool.worker_failed_init(worker, error, time.monotonic())
            self._carry_out(pool, plan)
            self._changed()
            return
        in_flight, plan = pool.worker_exited(worker, time.monotonic())
        if in_flight is not None and not in_flight.answered:
            duration_ms = (time.monotonic() - (in_flight.dispatched or in_flight.received)) * 1000
            report = self._report(pool, worker, in_flight, duration_ms=duration_ms, cpu_ms=0.0)
            error = errors.platform_error(
                errors.WORKER_CRASHED,
                f"the worker {worker.id} (pid {process.pid}) {how} during the invocation",
            )
            self._complete(in_flight, Outcome(ok=False, error=error, report=report))
        self._carry_out(pool, plan)
        self._changed()

    def _init_timed_out(self, worker_id: str) -> None:
        self._timers.pop(f"init:{worker_id}", None)
        entry = self._records.get(worker_id)
        process = self._processes.get(worker_id)
        if entry is None or process is None:
            return
        pool, worker = entry
        if worker.state != "starting":
            return
        log.error("worker %s of %s ran its init phase past %.0f s; killed", worker_id, pool.config.name, INIT_TIMEOUT_S)
        error = errors.platform_error(
            errors.INIT_TIMEOUT,
            f"the module code of {pool.config.name!r} ran past {INIT_TIMEOUT_S:.0f} s; "
            "move slow work out of module level or make it faster",
        )
        worker.set_state("draining")
        process.kill()
        self._carry_out(pool, pool.worker_failed_init(worker, error, time.monotonic()))

    def _invocation_timed_out(self, worker_id: str) -> None:
        self._timers.pop(f"run:{worker_id}", None)
        entry = self._records.get(worker_id)
        if entry is None:
            return
        pool = entry[0]
        timeout_s = pool.config.timeout_s
        message = (
            f"{pool.config.name!r} ran past its timeout of {timeout_s:g} s and its worker was killed; "
            "raise timeout_s in function.toml or make the handler faster"
        )
        self._kill_in_flight(worker_id, errors.TIMEOUT, message, duration_ms=timeout_s * 1000)

    def _memory_exceeded(self, worker_id: str, resident_mb: float) -> None:
        entry = self._records.get(worker_id)
        if entry is None:
            return
        pool = entry[0]
        message = (
            f"{pool.config.name!r} used {resident_mb:.0f} MB, past its memory_mb of {pool.config.memory_mb}, "
            "and its worker was killed; raise memory_mb in function.toml or use less memory"
        )
        self._kill_in_flight(worker_id, errors.OUT_OF_MEMORY, message)

    def _kill_in_flight(self, worker_id: str, error_type: str, message: str, *, duration_ms: float | None = None) -> None:
        """Kill a busy worker's process group and reply to its invocation with a platform error."""
        entry = self._records.get(worker_id)
        process = self._processes.get(worker_id)
        if entry is None or process is None or entry[1].current is None:
            return
        pool, worker = entry
        invocation = worker.current
        cpu_ms = _process_cpu_ms(process.pid) - worker.init_cpu_ms - worker.cpu_ms
        worker.killed = True
        worker.set_state("draining")
        process.kill()
        self._cancel_timer(f"run:{worker_id}")
        self._memory.unwatch(worker_id)
        if duration_ms is None:
            duration_ms = (time.monotonic() - (invocation.dispatched or invocation.received)) * 1000
        # NOTE: psutil counts in 10 ms clock ticks, so this cpu_ms is coarse.
        report = self._report(pool, worker, invocation, duration_ms=duration_ms, cpu_ms=max(0.0, cpu_ms))
        log.warning("request %s on worker %s pid %s: %s", invocation.request_id, worker_id, process.pid, message)
        self._complete(invocation, Outcome(ok=False, error=errors.platform_error(error_type, message), report=report))

    # -- results -------------------------------------------------------------

    def _report(self, pool: Pool, worker: WorkerRecord, invocation: Invocation, *, duration_ms: float, cpu_ms: float) -> dict[str, Any]:
        dispatched = invocation.dispatched or invocation.received
        # Cold means the request waited for an init phase, as in AWS Lambda: a
        # worker kept warm by min_warm serves its first request warm. The report
        # is made before the worker's count goes up, so 0 means its first request.
        ready_at = worker.ready_at if worker.ready_at is not None else float("inf")
        cold = worker.invocations == 0 and ready_at >= invocation.received
        memory_mb = pool.config.memory_mb
        energy_j = self.energy_model.invocation_joules(cpu_s=cpu_ms / 1000, wall_s=duration_ms / 1000, memory_mb=memory_mb)
        report = Report(
            request_id=invocation.request_id,
            function=pool.config.name,
            worker_id=worker.id,
            pid=worker.pid,
            start="cold" if cold else "warm",
            init_ms=worker.init_ms,
            queue_ms=(dispatched - invocation.received) * 1000,
            duration_ms=duration_ms,
            billed_ms=billed_ms(duration_ms),
            cpu_ms=cpu_ms,
            max_rss_mb=worker.rss_mb,
            memory_mb=memory_mb,
            energy_j=energy_j,
        )
        totals = self.totals.setdefault(pool.config.name, {"invocations": 0, "cpu_ms": 0.0, "joules": 0.0})
        totals["invocations"] += 1
        totals["cpu_ms"] += cpu_ms
        totals["joules"] += energy_j
        return report.to_dict()

    def _complete(self, invocation: Invocation, outcome: Outcome) -> None:
        if invocation.answered:
            return
        invocation.answered = True
        try:
            self._on_complete(invocation, outcome)
        except Exception:
            log.exception("replying to request %s failed", invocation.request_id)

    def _store_logs(self, function: str, request_id: str | None, lines: list[list[Any]], dropped: int) -> None:
        if not lines and not dropped:
            return
        entries = [{"ts": ts, "request_id": request_id, "stream": stream, "line": text} for ts, stream, text in lines]
        if dropped:
            entries.append({
                "ts": time.time(), "request_id": request_id, "stream": "platform",
                "line": f"[output truncated: {dropped} more lines were dropped]", "truncated": True,
            })
        kept = self._logs.get(function)
        if kept is not None:
            kept.extend(entries)
        self._on_logs(function, entries)

    # -- state ---------------------------------------------------------------

    def pools_state(self) -> dict[str, Any]:
        functions = {name: pool.to_state(self.measured_cpu_ms) for name, pool in self.pools.items()}
        return {"ts": round(time.time(), 3), "functions": functions}

    def live_workers(self) -> dict[int, tuple[str, int]]:
        """Return the function name and memory limit in MB of every live worker, by pid."""
        return {
            worker.pid: (pool.config.name, pool.config.memory_mb)
            for pool, worker in self._records.values()
            if worker.pid is not None
        }

    def busy_count(self) -> int:
        return sum(1 for _, worker in self._records.values() if worker.state == "busy")

    def _changed(self) -> None:
        self._on_pools_changed()

    def _cancel_timer(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    # -- shutdown ------------------------------------------------------------

    async def shutdown(self, *, drain_timeout_s: float = 30.0) -> None:
        """Stop taking work, let busy workers finish (at most drain_timeout_s), then stop every worker."""
        self._stopping = True
        for pool in self.pools.values():
            for rejection in pool.retire_all().rejections:
                self._reject(rejection)
        deadline = time.monotonic() + drain_timeout_s
        if self.busy_count():
            log.info("draining %d in-flight invocations (at most %.0f s)", self.busy_count(), drain_timeout_s)
        while self.busy_count() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for process in list(self._processes.values()):
            process.terminate()
        grace_deadline = time.monotonic() + DRAIN_GRACE_S
        while self._processes and time.monotonic() < grace_deadline:
            await asyncio.sleep(0.02)
        for process in list(self._processes.values()):
            process.kill()
        kill_deadline = time.monotonic() + 2.0
        while self._processes and time.monotonic() < kill_deadline:
            await asyncio.sleep(0.02)
        self._memory.stop()
        for handle in list(self._timers.values()) + list(self._retire_timers.values()):
            handle.cancel()
        self._timers.clear()
        self._retire_timers.clear()
        if self._processes:
            log.error("controller stopped; %d workers did not report their exit", len(self._processes))
        else:
            log.info("controller stopped; no workers left")
        # The fork server kills any worker still alive when its socket closes.
        await self.fork_server.stop()


def _process_cpu_ms(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return (times.user + times.system + times.children_user + times.children_system) * 1000


def _log_task_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("controller task %s failed", task.get_name(), exc_info=task.exception())
