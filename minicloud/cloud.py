"""The cloud process: broker (when embedded), bus, gateway, controller, meters.

`Cloud.run()` is what `minicloud up` runs. Startup order: broker, fork
server, bus, functions; then one line on stderr that starts with
"minicloud ready". Shutdown order: stop accepting, drain in-flight
invocations, stop every worker, clear nothing retained that a client still
needs, disconnect, stop the broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicloud import protocol
from minicloud.broker import EmbeddedBroker
from minicloud.bus import Bus, Message, parse_broker_url
from minicloud.control import ControlHandler
from minicloud.controller import Controller
from minicloud.energy import EnergyModel
from minicloud.errors import BusError
from minicloud.gateway import Gateway
from minicloud.manifest import load_functions_dir
from minicloud.meter import EnergyMeter

log = logging.getLogger(__name__)

# Pools state is published at most this often, however fast it changes.
STATE_PUBLISH_INTERVAL_S = 0.2
ENERGY_SAMPLE_INTERVAL_S = 1.0
BROKER_RESTART_PAUSE_S = 3.0
RESEND_DELAY_S = 2.5
# Published retained by the broker when the cloud's connection dies without a
# goodbye, such as a SIGKILL, so no client keeps showing workers that are gone.
OFFLINE_POOLS_STATE = {"ts": 0, "functions": {}, "status": "offline"}
# Beside the package: in a checkout, and in site-packages, where the wheel
# installs sample_functions.
BUNDLED_FUNCTIONS = Path(__file__).resolve().parent.parent / "sample_functions"


@dataclass
class CloudOptions:
    """Options of `minicloud up`."""

    host: str = "127.0.0.1"
    port: int = 1883
    broker_url: str | None = None  # None: start the embedded broker on host:port
    function_dirs: list[Path] = field(default_factory=list)
    namespace: str = protocol.DEFAULT_NAMESPACE
    drain_timeout_s: float = 30.0
    exit_on_stdin_eof: bool = False
    energy_model: EnergyModel = field(default_factory=EnergyModel)
    password_file: Path | None = None  # embedded broker: accept only these users
    acl_file: Path | None = None  # embedded broker: check topics against this ACL
    deploy_roots: list[Path] = field(default_factory=list)  # empty: deploy from any readable folder


def default_function_dirs() -> list[Path]:
    """Return ./functions when it exists, else the bundled sample functions."""
    local = Path("functions")
    if local.is_dir():
        return [local]
    return [BUNDLED_FUNCTIONS]


class Cloud:
    """All server-side parts of minicloud, in one process and one event loop."""

    def __init__(self, options: CloudOptions) -> None:
        self.options = options
        self.topics = protocol.Topics(options.namespace)
        self.broker: EmbeddedBroker | None = None
        self.bus: Bus | None = None
        self.controller: Controller | None = None
        self.gateway: Gateway | None = None
        self.meter: EnergyMeter | None = None
        self._state_handle: asyncio.TimerHandle | None = None
        self._last_state_publish = 0.0
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def broker_url(self) -> str:
        if self.options.broker_url:
            return self.options.broker_url
        return f"mqtt://{self.options.host}:{self.options.port}"

    async def start(self) -> None:
        options = self.options
        if options.broker_url is None:
            self.broker = EmbeddedBroker(
                host=options.host, port=options.port, password_file=options.password_file, acl_file=options.acl_file,
            )
            await self.broker.start()

        self.controller = Controller(
            on_complete=self._complete,
            on_pools_changed=self._pools_changed,
            on_logs=self._publish_logs,
            energy_model=options.energy_model,
        )
        # Started now, so that the first cold start does not pay for it.
        await self.controller.fork_server.start()
        self.meter = EnergyMeter(options.energy_model, live_workers=self.controller.live_workers)
        self.controller.measured_cpu_ms = self.meter.process_cpu_ms
        gateway_options: dict[str, Any] = {}
        if self.broker is not None:
            from minicloud.broker_plugins import RETAINED_PUBLISHES

            gateway_options["was_retained"] = RETAINED_PUBLISHES.was_retained
        self.gateway = Gateway(self.controller, self.topics, self._publish, **gateway_options)
        self.control = ControlHandler(
            self.controller, self.topics, self._send, self._energy_state, deploy_roots=options.deploy_roots,
        )

        bus_url = parse_broker_url(self.broker_url)
        if self.broker is not None and self.broker.requires_password:
            bus_url = dataclasses.replace(bus_url, username=self.broker.internal_username, password=self.broker.internal_password)
        self.bus = Bus(
            bus_url,
            subscriptions=[self.topics.invoke_all, self.topics.control_all],
            on_message=self._route,
            on_state=self._bus_state,
            name="cloud",
            will=(self.topics.pools_state, protocol.dumps(OFFLINE_POOLS_STATE)),
            # The embedded amqtt broker speaks only 3.1.1: skip the MQTT 5 attempt.
            mqtt5=False if self.broker is not None else None,
        )
        self.bus.start()
        await self.bus.wait_connected(timeout=10.0)
        if self.bus.refused_subscriptions:
            # A cloud that receives no requests would only time every client out.
            topics = ", ".join(sorted(self.bus.refused_subscriptions))
            raise BusError(
                f"the broker at {self.bus.url} refused this cloud's subscriptions to {topics}; its ACL must let "
                f"this user read them: write one with 'minicloud acl --namespace {self.topics.namespace} "
                "--cloud-user USER' (docs/deploy.md)"
            )

        for directory in options.function_dirs or default_function_dirs():
            self._load_functions(directory)
        self._tasks.append(asyncio.create_task(self._sample_energy(), name="energy-sampler"))

    def _load_functions(self, directory: Path) -> None:
        if not directory.is_dir():
            log.error("functions directory %s not found; no functions loaded from it", directory)
            return
        configs, failures = load_functions_dir(directory)
        for failure in failures:
            log.error("function not loaded: %s", failure)
        for config in configs:
            self.controller.deploy(config)
        log.info("loaded %d functions from %s (%d invalid)", len(configs), directory, len(failures))

    async def run(self) -> int:
        """Run until SIGINT or SIGTERM; return the exit status."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, self._restart_broker_soon)
        if self.options.exit_on_stdin_eof:
            loop.add_reader(sys.stdin.fileno(), self._read_stdin, stop)
        try:
            await self.start()
        except (OSError, BusError) as exc:
            print(f"minicloud: {exc}", file=sys.stderr)
            await self.stop()
            return 2
        functions = ", ".join(sorted(self.controller.pools)) or "none"
        print(f"minicloud ready on {parse_broker_url(self.broker_url)} (namespace {self.topics.namespace}; functions: {functions})", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("signal received; stopping")
        await self.stop()
        return 0

    def _restart_broker_soon(self) -> None:
        task = asyncio.ensure_future(self.restart_broker())
        task.add_done_callback(_log_failure)

    async def restart_broker(self, *, pause_s: float = BROKER_RESTART_PAUSE_S) -> None:
        """Stop the embedded broker, wait `pause_s` seconds, and start it again (on SIGUSR1).

        Every client, the cloud's own connection included, loses the broker
        and reconnects: a way to see how the cloud rides out a broker outage.
        """
        if self.broker is None:
            log.warning(
                "SIGUSR1 restarts the embedded broker, and this cloud uses %s; nothing done",
                parse_broker_url(self.broker_url),
            )
            return
        log.warning("restarting the embedded broker: down for %.1f s", pause_s)
        await self.broker.stop()
        await asyncio.sleep(pause_s)
        await self.broker.start()

    def _read_stdin(self, stop: asyncio.Event) -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            log.info("standard input closed; stopping")
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            stop.set()

    async def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop_accepting()
        if self.controller is not None:
            await self.controller.shutdown(drain_timeout_s=self.options.drain_timeout_s)
            self._publish_pools_now()
        # Let the last replies reach the broker before disconnecting.
        await asyncio.sleep(0.1)
        for task in self._tasks:
            task.cancel()
        if self._state_handle is not None:
            self._state_handle.cancel()
        if self.bus is not None:
            await self.bus.stop()
        if self.broker is not None:
            await self.broker.stop()
        log.info("cloud stopped")

    # -- the bus -------------------------------------------------------------

    def _route(self, message: Message) -> None:
        if self.topics.function_of_invoke(message.topic) is not None:
            self.gateway.handle(message)
        elif self.topics.action_of_control(message.topic) is not None:
            self.control.handle(message)

    def _bus_state(self, state: str) -> None:
        if state == "connected":
            # Retained state may have been lost with a broker restart.
            self._publish_pools_now()
            self._publish_energy()
            if self.gateway is not None:
                # Clients reconnect with a back-off of up to 2 s, and a reply sent
                # before its client has subscribed again would reach no subscriber.
                asyncio.get_running_loop().call_later(RESEND_DELAY_S, self.gateway.resend_undelivered)

    async def _publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, correlation_data: bytes | None = None) -> None:
        await self.bus.publish(topic, payload, qos=qos, retain=retain, correlation_data=correlation_data)

    def _send(self, topic: str, payload: bytes, correlation_data: bytes | None) -> None:
        task = asyncio.ensure_future(self._publish(topic, payload, correlation_data=correlation_data))
        task.add_done_callback(_log_failure)

    def _complete(self, invocation: Any, outcome: Any) -> None:
        self.gateway.complete(invocation, outcome)

    def _publish_logs(self, function: str, lines: list[dict[str, Any]]) -> None:
        if self.bus is None or not self.bus.is_connected:
            return
        payload = protocol.dumps({"function": function, "lines": lines})
        task = asyncio.ensure_future(self._publish(self.topics.logs(function), payload, qos=0))
        task.add_done_callback(_log_failure)

    # -- state ---------------------------------------------------------------

    def _pools_changed(self) -> None:
        if self._state_handle is not None:
            return
        delay = max(0.0, self._last_state_publish + STATE_PUBLISH_INTERVAL_S - time.monotonic())
        self._state_handle = asyncio.get_running_loop().call_later(delay, self._publish_pools_now)

    def _publish_pools_now(self) -> None:
        self._state_handle = None
        if self.bus is None or not self.bus.is_connected or self.controller is None:
            return
        self._last_state_publish = time.monotonic()
        payload = protocol.dumps(self.controller.pools_state())
        task = asyncio.ensure_future(self._publish(self.topics.pools_state, payload, retain=True))
        task.add_done_callback(_log_failure)

    def _energy_state(self) -> dict[str, Any]:
        return self.meter.state(self.controller.totals)

    def _publish_energy(self) -> None:
        if self.bus is None or not self.bus.is_connected or self.meter is None:
            return
        payload = protocol.dumps(self._energy_state())
        task = asyncio.ensure_future(self._publish(self.topics.energy_state, payload, retain=True))
        task.add_done_callback(_log_failure)

    async def _sample_energy(self) -> None:
        while True:
            await asyncio.sleep(ENERGY_SAMPLE_INTERVAL_S)
            try:
                self.meter.sample()
            except Exception:
                log.exception("sampling energy failed")
            self._publish_energy()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, BusError):
        log.warning("publish failed: %s", exc)
    elif exc is not None:
        log.error("publish failed", exc_info=exc)
