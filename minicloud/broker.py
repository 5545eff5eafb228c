"""The embedded MQTT broker: amqtt, in the cloud's own event loop.

It speaks MQTT 3.1.1 only. It binds 127.0.0.1 by default, so nothing off
this host can reach a cloud that was started without a production broker.
With a password file it accepts only the users in it. With an ACL file it
checks every topic against it. Both files are in Mosquitto's formats.
"""

from __future__ import annotations

import logging
import secrets
import socket
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """An amqtt broker listening on one TCP address."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, password_file: Path | None = None, acl_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.password_file = password_file
        self.acl_file = acl_file
        # The cloud's own connection: made for this run, never written anywhere.
        self.internal_username = f"minicloud-cloud-{secrets.token_hex(4)}"
        self.internal_password = secrets.token_urlsafe(24)
        self._broker = None

    def __repr__(self) -> str:
        state = "running" if self._broker is not None else "stopped"
        return f"<EmbeddedBroker {self.host}:{self.port} {state}>"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def requires_password(self) -> bool:
        return self.password_file is not None

    async def start(self) -> None:
        """Start listening; raise OSError when the address is taken."""
        _check_port_free(self.host, self.port)

        # amqtt warns about its own deprecated options on import.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from amqtt.broker import Broker

        # No $SYS publisher: it would wake an idle cloud every few seconds
        # for statistics that no component reads.
        plugins: dict[str, dict[str, object]] = {"minicloud.broker_plugins.RetainedPublishRecorder": {}}
        if self.password_file is None:
            plugins["amqtt.plugins.authentication.AnonymousAuthPlugin"] = {"allow_anonymous": True}
        else:
            plugins["minicloud.broker_plugins.PasswordAuthPlugin"] = {
                "password_file": str(self.password_file),
                "internal_username": self.internal_username,
                "internal_password": self.internal_password,
            }
        if self.acl_file is not None:
            plugins["minicloud.broker_plugins.AclTopicPlugin"] = {
                "acl_file": str(self.acl_file),
                "internal_username": self.internal_username,
            }
        # TODO: amqtt 0.12 has no maximum packet size, so a client can send a
        # publish larger than MAX_PAYLOAD_BYTES; the gateway rejects it, but
        # only after the broker has read it into memory.
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": plugins,
        }
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("amqtt.broker").addFilter(_drop_protocol_probes)
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        security = "anonymous access"
        if self.password_file is not None:
            security = f"passwords from {self.password_file}"
        if self.acl_file is not None:
            security += f", ACL from {self.acl_file}"
        log.info("embedded broker listening on %s (%s)", self.url, security)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            # Stop accepting first: amqtt 0.12 closes its sessions before its
            # listeners, and a client that reconnects in between would keep a
            # session on the stopped broker, seemingly connected to nothing.
            for server in getattr(broker, "_servers", {}).values():
                await server.close_instance()
            await broker.shutdown()
        except Exception:
            log.exception("stopping the embedded broker on %s failed", self.url)
        log.info("embedded broker on %s stopped", self.url)


def _drop_protocol_probes(record: logging.LogRecord) -> bool:
    """Hide amqtt's warnings about MQTT 5 connection attempts.

    Every minicloud client first tries MQTT 5, and amqtt, which speaks only
    3.1.1, rejects it with two warnings. amqtt's "Invalid connection from"
    line is always followed by one that gives the reason, so it is dropped
    too, and the reason stays for every other kind of invalid connection.
    """
    message = record.getMessage()
    if message.startswith("Invalid connection from"):
        return False
    return not (message.startswith("Failed to initialize client session: Invalid protocol") and message.endswith(": 5"))


def _check_port_free(host: str, port: int) -> None:
    """Raise OSError with a clear message when host:port is already in use."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port}: {exc.strerror}; "
            "another broker or cloud may be running there: attach to it with --broker, "
            "or choose another address with --port",
        ) from exc
    finally:
        probe.close()
