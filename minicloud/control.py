"""Control requests: deploy, scale, remove, ls, energy, logs.

A control request uses the envelope of an invoke request on
`{ns}/control/{action}`, with its arguments in "event". The reply has the
shape of an invoke reply, with the action's output as "result".

    deploy  {"path": DIR}                         -> {"function", "status", "config"}
    scale   {"function", "min"?: N, "max"?: M}    -> {"function", "config"}
    remove  {"function"}                          -> {"function", "status": "removed"}
    ls      {}                                    -> the pools state
    energy  {}                                    -> the energy state
    logs    {"function", "limit"?: N}             -> {"function", "lines": [...]}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minicloud import errors, protocol
from minicloud.bus import Message
from minicloud.controller import Controller
from minicloud.errors import ManifestError, PlatformError
from minicloud.manifest import load_function

log = logging.getLogger(__name__)


class ControlHandler:
    """Handles control requests by calling the controller."""

    def __init__(
        self,
        controller: Controller,
        topics: protocol.Topics,
        send: Callable[[str, bytes, bytes | None], None],
        energy_state: Callable[[], dict[str, Any]],
        *,
        deploy_roots: list[Path] | None = None,
    ) -> None:
        self._controller = controller
        self._topics = topics
        self._send = send
        self._energy_state = energy_state
        # Empty: any folder the cloud's user can read may be deployed.
        self._deploy_roots = [root.resolve() for root in deploy_roots or []]

    def handle(self, message: Message) -> None:
        action = self._topics.action_of_control(message.topic)
        if action is None or message.retain:
            return
        try:
            request = protocol.parse_request(
                message.payload, response_topic=message.response_topic, correlation_data=message.correlation_data
            )
        except PlatformError as exc:
            log.warning("rejected a control request on %s: %s", message.topic, exc.message)
            reply_to = protocol.salvage_reply_to(message.payload) or message.response_topic
            if reply_to and not self._topics.is_forbidden_reply_topic(reply_to):
                request_id = protocol.salvage_id(message.payload) or protocol.new_request_id()
                self._send(reply_to, protocol.error_reply(request_id, exc.to_dict(), None), message.correlation_data)
            return
        if request.reply_to is not None and self._topics.is_forbidden_reply_topic(request.reply_to):
            log.warning(
                "rejected control %s request %s: reply_to %s is one of the cloud's own topics; use a topic under %s",
                action, request.id, request.reply_to, self._topics.replies_prefix,
            )
            return
        try:
            result = self._run(action, request.event)
            reply = protocol.success_reply(request.id, protocol.dumps(result), None)
        except PlatformError as exc:
            log.info("control %s request %s failed: %s", action, request.id, exc.message)
            reply = protocol.error_reply(request.id, exc.to_dict(), None)
        except Exception as exc:
            log.exception("control %s request %s failed", action, request.id)
            reply = protocol.error_reply(
                request.id, errors.platform_error(errors.UNAVAILABLE, f"{action} failed: {exc}"), None
            )
        if request.reply_to:
            self._send(request.reply_to, reply, request.correlation_data)

    def _run(self, action: str, event: Any) -> Any:
        if not isinstance(event, dict):
            raise PlatformError(errors.INVALID_REQUEST, f'"event" of a {action} request must be an object')
        if action == "deploy":
            return self._deploy(event)
        if action == "scale":
            return self._scale(event)
        if action == "remove":
            name = _string(event, "function")
            self._controller.remove(name)
            return {"function": name, "status": "removed"}
        if action == "ls":
            return self._controller.pools_state()
        if action == "energy":
            return self._energy_state()
        if action == "logs":
            name = _string(event, "function")
            limit = _count(event, "limit", default=200)
            return {"function": name, "lines": self._controller.logs(name, limit)}
        valid = ", ".join(protocol.CONTROL_ACTIONS)
        raise PlatformError(errors.INVALID_REQUEST, f"unknown control action {action!r}; valid actions: {valid}")

    def _deploy(self, event: dict[str, Any]) -> dict[str, Any]:
        path = _string(event, "path")
        resolved = Path(path).resolve()
        if self._deploy_roots and not any(resolved.is_relative_to(root) for root in self._deploy_roots):
            roots = ", ".join(str(root) for root in self._deploy_roots)
            raise PlatformError(
                errors.INVALID_REQUEST,
                f"cannot deploy {resolved}: this cloud deploys only from {roots}; "
                "copy the function folder under one of them, or start the cloud with another --deploy-root",
            )
        try:
            config = load_function(resolved)
        except ManifestError as exc:
            raise PlatformError(errors.INVALID_REQUEST, str(exc)) from exc
        status = self._controller.deploy(config)
        return {"function": config.name, "status": status, "config": config.to_dict()}

    def _scale(self, event: dict[str, Any]) -> dict[str, Any]:
        name = _string(event, "function")
        min_warm = _count(event, "min", default=None)
        max_concurrency = _count(event, "max", default=None)
        config = self._controller.scale(name, min_warm=min_warm, max_concurrency=max_concurrency)
        return {"function": name, "config": config.to_dict()}


def _string(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise PlatformError(errors.INVALID_REQUEST, f'"{key}" must be a non-empty string, got {value!r}')
    return value


def _count(event: dict[str, Any], key: str, *, default: int | None) -> int | None:
    value = event.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlatformError(errors.INVALID_REQUEST, f'"{key}" must be a whole number of 0 or more, got {value!r}')
    return value
