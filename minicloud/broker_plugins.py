"""Plugins of the embedded amqtt broker: retained requests, passwords, topic ACLs.

RetainedPublishRecorder lets the gateway see that a request was published retained.

MQTT 3.1.1 brokers clear the retain flag on messages delivered to a client
that was already subscribed, so a gateway on 3.1.1 cannot tell a retained
request from a live one. The embedded broker runs in the gateway's own
process, so this plugin records each retained publish where the gateway
can look it up. On an MQTT 5 broker, the subscription's Retain As
Published option does the same job.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session

from minicloud.acl import load_acl
from minicloud.passwords import load_password_file, verify_password

log = logging.getLogger(__name__)

_MAX_RECORDED = 1000


class RetainedPublishes:
    """Digests of recently published retained messages, by topic."""

    def __init__(self) -> None:
        self._recorded: OrderedDict[tuple[str, bytes], None] = OrderedDict()

    def record(self, topic: str, payload: bytes) -> None:
        self._recorded[(topic, hashlib.sha256(payload).digest())] = None
        while len(self._recorded) > _MAX_RECORDED:
            self._recorded.popitem(last=False)

    def was_retained(self, topic: str, payload: bytes) -> bool:
        """Return whether this exact message was published retained, and forget it."""
        key = (topic, hashlib.sha256(payload).digest())
        if key in self._recorded:
            del self._recorded[key]
            return True
        return False


RETAINED_PUBLISHES = RetainedPublishes()


class RetainedPublishRecorder(BasePlugin):  # type: ignore[type-arg]
    """Records every retained publish in RETAINED_PUBLISHES."""

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        packet = getattr(message, "publish_packet", None)
        if packet is not None and packet.retain_flag and message.data:
            RETAINED_PUBLISHES.record(message.topic, bytes(message.data))


class PasswordAuthPlugin(BaseAuthPlugin):
    """Accepts a client only with a user name and password from a Mosquitto password file.

    The cloud's own connection uses a user name and password made for this
    run only (`internal_username`), so no file needs an entry for it.
    """

    @dataclass
    class Config:
        password_file: str
        internal_username: str
        internal_password: str

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        config = self.context.config
        self._internal = (config.internal_username, config.internal_password)
        # Read at start-up, so that a broken file stops the cloud with a clear
        # message instead of refusing every client later.
        self._entries = load_password_file(Path(config.password_file))

    async def authenticate(self, *, session: Session) -> bool:
        username = session.username
        password = session.password or ""
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if username is None:
            log.warning("client %s rejected: no user name, and the broker requires a password", session.client_id)
            return False
        if (username, password) == self._internal:
            return True
        stored = self._entries.get(username)
        if stored is not None and verify_password(password, stored):
            log.info("client %s authenticated as %s", session.client_id, username)
            return True
        log.warning("client %s rejected: wrong user name or password for user %s", session.client_id, username)
        return False


class AclTopicPlugin(BaseTopicPlugin):
    """Checks every subscribe, publish and delivery against an acl_file, as Mosquitto does.

    The cloud's own connection (`internal_username`) may use every topic.
    Subscriptions are checked whole, because amqtt sends retained messages
    to a new subscriber without a per-message check.
    """

    @dataclass
    class Config:
        acl_file: str
        internal_username: str

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._acl = load_acl(Path(self.context.config.acl_file))
        self._internal_username = self.context.config.internal_username

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None) -> bool:
        if session is None or topic is None:
            return False
        if session.username == self._internal_username:
            return True
        access = "write" if action == Action.PUBLISH else "read"
        allowed = self._acl.allows(session.username, session.client_id or "", topic, access)
        if not allowed and action != Action.RECEIVE:
            verb = "publish on" if action == Action.PUBLISH else "subscribe to"
            log.warning("ACL: client %s (user %s) may not %s %s", session.client_id, session.username, verb, topic)
        return allowed
