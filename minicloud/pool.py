"""The pool of one function: which worker takes which request, when to scale.

Every method here is plain and synchronous. It changes the pool's records
and returns a `Plan` of what to do: dispatch, spawn, reject, retire. The
controller carries the plan out (forks, signals, replies) afterwards, so
the scheduling rules can be tested without a broker or a process.

Worker states: starting -> idle <-> busy; idle -> draining -> gone.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from minicloud import errors
from minicloud.manifest import FunctionConfig

# After a worker fails its init phase, min_warm waits this long before it
# starts another one, doubling up to the maximum, so a broken function is
# not forked in a tight loop.
INIT_BACKOFF_S = (1.0, 60.0)


@dataclass(eq=False)
class Invocation:
    """One request for a function, from arrival to its one reply."""

    request_id: str
    function: str
    request_json: bytes  # the invoke request's JSON object, with the event under "event"
    received: float  # time.monotonic() at arrival
    queue_deadline: float  # monotonic time after which a queued request gets Timeout
    context: Any = None  # what the gateway needs to reply
    dispatched: float | None = None
    worker_id: str | None = None
    answered: bool = False


@dataclass(eq=False)
class WorkerRecord:
    """The controller's record of one worker."""

    id: str
    version: int
    state: str = "starting"
    since: float = field(default_factory=time.time)
    idle_since: float = 0.0  # monotonic end of the last invocation
    pid: int | None = None
    invocations: int = 0
    cpu_ms: float = 0.0
    rss_mb: float = 0.0
    init_ms: float | None = None
    init_cpu_ms: float = 0.0
    ready_at: float | None = None  # monotonic time the init phase ended
    current: Invocation | None = None
    killed: bool = False  # killed by the controller for a timeout or the memory limit

    def __repr__(self) -> str:
        return f"<Worker {self.id} {self.state} pid={self.pid} invocations={self.invocations}>"

    def set_state(self, state: str) -> None:
        self.state = state
        self.since = time.time()

    def to_state(self, measured_cpu_ms: float | None = None) -> dict[str, Any]:
        """Return the worker as the pools state shows it.

        `measured_cpu_ms` is psutil's reading of the whole process, which is
        coarser: it includes the init phase and ticks in steps of 10 ms.
        """
        body = {
            "id": self.id,
            "pid": self.pid,
            "state": self.state,
            "since": round(self.since, 3),
            "invocations": self.invocations,
            "cpu_ms": round(self.cpu_ms, 3),
            "rss_mb": round(self.rss_mb, 2),
            "init_cpu_ms": round(self.init_cpu_ms, 3),
        }
        if measured_cpu_ms is not None:
            body["cpu_ms_psutil"] = round(measured_cpu_ms, 1)
        return body


@dataclass
class Rejection:
    invocation: Invocation
    error_type: str
    message: str


@dataclass
class Plan:
    """Actions for the controller to carry out after a change of the pool."""

    dispatches: list[tuple[WorkerRecord, Invocation]] = field(default_factory=list)
    spawns: list[WorkerRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    retirements: list[WorkerRecord] = field(default_factory=list)

    def extend(self, other: Plan) -> None:
        self.dispatches += other.dispatches
        self.spawns += other.spawns
        self.rejections += other.rejections
        self.retirements += other.retirements


class Pool:
    """Workers and queued requests of one function."""

    def __init__(self, config: FunctionConfig, *, version: int = 1) -> None:
        self.config = config
        self.version = version
        self.workers: dict[str, WorkerRecord] = {}
        self.queue: deque[Invocation] = deque()
        self._next_worker = 0
        self._init_failures = 0
        self._backoff_until = 0.0
        self.last_init_error: dict[str, Any] | None = None
        # Set when the function is removed or the cloud stops: no new workers,
        # and busy ones drain as soon as they finish.
        self.retired = False

    def __repr__(self) -> str:
        counts = self.counts()
        return (
            f"<Pool {self.config.name} starting={counts['starting']} idle={counts['idle']} "
            f"busy={counts['busy']} draining={counts['draining']} queued={len(self.queue)}>"
        )

    def counts(self) -> dict[str, int]:
        counts = {"starting": 0, "idle": 0, "busy": 0, "draining": 0}
        for worker in self.workers.values():
            counts[worker.state] += 1
        return counts

    @property
    def active_count(self) -> int:
        """Workers that count against max_concurrency: all but the draining ones."""
        return sum(1 for worker in self.workers.values() if worker.state != "draining")

    # -- requests ----------------------------------------------------------

    def submit(self, invocation: Invocation, now: float) -> Plan:
        """Take a new request: dispatch it, hold it for a cold start, queue it, or reject it."""
        name = self.config.name
        if self.config.max_concurrency == 0:
            return Plan(rejections=[Rejection(
                invocation, errors.THROTTLED,
                f"function {name!r} is disabled (max_concurrency is 0); "
                f"enable it with: minicloud scale {name} --max N",
            )])

        if self.is_backing_off(now) and not self.active_count:
            # The last init phase failed: fail fast with its error instead of
            # forking a worker for every request while the code is broken.
            error = self.last_init_error
            return Plan(rejections=[Rejection(
                invocation, error["type"],
                f"{error['message']} (init failed {self._init_failures} times; the next request "
                f"after {self._backoff_until - now:.1f} s starts a worker again, or deploy a fix now)",
            )])

        coming = self._starting_count() + max(0, self.config.max_concurrency - self.active_count)
        has_idle = any(self._is_assignable(worker) for worker in self.workers.values())
        if not has_idle and len(self.queue) - coming >= self.config.queue_size:
            return Plan(rejections=[Rejection(
                invocation, errors.THROTTLED,
                f"function {name!r} is at max_concurrency {self.config.max_concurrency} and its "
                f"queue of {self.config.queue_size} is full; retry later or raise the limit with "
                f"minicloud scale {name} --max N",
            )])

        self.queue.append(invocation)
        return self.schedule(now)

    def is_backing_off(self, now: float) -> bool:
        """Return whether a failed init phase keeps new workers from starting until the back-off ends."""
        return self.last_init_error is not None and now < self._backoff_until

    def expire(self, invocation: Invocation) -> Plan:
        """Reject a request whose wait in the queue ran past its deadline."""
        try:
            self.queue.remove(invocation)
        except ValueError:
            return Plan()  # Already dispatched or rejected.
        waited_ms = (time.monotonic() - invocation.received) * 1000
        return Plan(rejections=[Rejection(
            invocation, errors.TIMEOUT,
            f"request waited {waited_ms:.0f} ms for a worker of {self.config.name!r} and timed out "
            "before it ran; raise timeout_ms or max_concurrency",
        )])

    # -- worker lifecycle --------------------------------------------------

    def new_worker_id(self) -> str:
        self._next_worker += 1
        return f"{self.config.name}-{self.version}-{self._next_worker}"

    def worker_ready(self, worker: WorkerRecord, init_ms: float, now: float) -> Plan:
        worker.init_ms = init_ms
        worker.ready_at = now
        worker.idle_since = now
        worker.set_state("idle")
        self._init_failures = 0
        self.last_init_error = None
        return self.schedule(now)

    def worker_failed_init(self, worker: WorkerRecord, error: dict[str, Any], now: float) -> Plan:
        """Fail the held requests with the init error: every new worker would fail the same way."""
        self.workers.pop(worker.id, None)
        self._init_failures += 1
        low, high = INIT_BACKOFF_S
        self._backoff_until = now + min(high, low * 2 ** (self._init_failures - 1))
        self.last_init_error = error
        plan = Plan()
        if not self._starting_count():
            while self.queue:
                plan.rejections.append(Rejection(self.queue.popleft(), error["type"], error["message"]))
        return plan

    def worker_done(self, worker: WorkerRecord, now: float, *, exiting: bool = False) -> Plan:
        """Record the end of an invocation; the worker takes the next request or idles."""
        worker.current = None
        worker.invocations += 1
        worker.idle_since = now
        if exiting:
            worker.set_state("draining")
            return self.schedule(now)
        worker.set_state("idle")
        plan = Plan()
        if worker.version != self.version or self.retired:
            worker.set_state("draining")
            plan.retirements.append(worker)
        plan.extend(self.schedule(now))
        return plan

    def worker_exited(self, worker: WorkerRecord, now: float) -> tuple[Invocation | None, Plan]:
        """Remove a worker that exited; return its unanswered invocation and the new plan."""
        self.workers.pop(worker.id, None)
        in_flight = worker.current
        worker.current = None
        return in_flight, self.schedule(now)

    def retire_idle(self, now: float) -> tuple[Plan, float | None]:
        """Drain workers idle for keep_warm_s, keeping min_warm; return the plan and the next check time."""
        plan = Plan()
        next_check: float | None = None
        idle = sorted(
            (worker for worker in self.workers.values() if worker.state == "idle"),
            key=lambda worker: worker.idle_since,
        )
        keep = self.config.keep_warm_s
        for worker in idle:
            expires = worker.idle_since + keep
            if expires <= now and self.active_count > self.config.min_warm:
                worker.set_state("draining")
                plan.retirements.append(worker)
            elif expires > now:
                next_check = expires if next_check is None else min(next_check, expires)
        return plan, next_check

    def update(self, config: FunctionConfig, *, new_code: bool) -> Plan:
        """Apply a new config; with new code, idle workers drain and busy ones drain when done."""
        self.config = config
        plan = Plan()
        if new_code:
            self.version += 1
            self._init_failures = 0
            self._backoff_until = 0.0
            for worker in self.workers.values():
                if worker.state == "idle":
                    worker.set_state("draining")
                    plan.retirements.append(worker)
        plan.extend(self.schedule(time.monotonic()))
        return plan

    def reject_queue(self, error_type: str, message: str) -> Plan:
        plan = Plan()
        while self.queue:
            plan.rejections.append(Rejection(self.queue.popleft(), error_type, message))
        return plan

    def retire_all(self) -> Plan:
        """Drain every worker that is not busy and reject the queue; busy workers drain when done."""
        self.retired = True
        plan = Plan()
        for worker in self.workers.values():
            if worker.state in ("idle", "starting"):
                worker.set_state("draining")
                plan.retirements.append(worker)
        while self.queue:
            plan.rejections.append(Rejection(
                self.queue.popleft(), errors.UNAVAILABLE, f"function {self.config.name!r} was removed or the cloud is stopping",
            ))
        return plan

    # -- the decision ------------------------------------------------------

    def schedule(self, now: float) -> Plan:
        """Match queued requests with idle workers, then start the workers still needed."""
        plan = Plan()
        if self.retired:
            return plan
        idle = [worker for worker in self.workers.values() if self._is_assignable(worker)]
        # The most recently used worker first, so the others can reach keep_warm_s and retire.
        idle.sort(key=lambda worker: worker.idle_since)
        while self.queue and idle:
            worker = idle.pop()
            invocation = self.queue.popleft()
            worker.set_state("busy")
            worker.current = invocation
            invocation.dispatched = now
            invocation.worker_id = worker.id
            plan.dispatches.append((worker, invocation))

        capacity = self.config.max_concurrency - self.active_count
        needed = len(self.queue) - self._starting_count()
        if now >= self._backoff_until:
            needed = max(needed, self.config.min_warm - self.active_count)
        for _ in range(max(0, min(needed, capacity))):
            worker = WorkerRecord(id=self.new_worker_id(), version=self.version)
            self.workers[worker.id] = worker
            plan.spawns.append(worker)
        return plan

    def _starting_count(self) -> int:
        return sum(1 for worker in self.workers.values() if worker.state == "starting")

    def _is_assignable(self, worker: WorkerRecord) -> bool:
        return worker.state == "idle" and worker.version == self.version

    def to_state(self, measured_cpu_ms: Any = lambda pid: None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "config": self.config.to_dict(),
            "queued": len(self.queue),
            "workers": [worker.to_state(measured_cpu_ms(worker.pid)) for worker in self.workers.values()],
        }
        if self.last_init_error is not None:
            body["init_error"] = self.last_init_error
            body["init_failures"] = self._init_failures
            body["broken"] = True
        return body
