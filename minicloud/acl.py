"""Topic access control in Mosquitto's acl_file format, for both brokers.

Mosquitto reads the file itself. The embedded broker reads the same file
through `AclTopicPlugin` (minicloud/broker_plugins.py), which calls
`AccessControlList.allows` here, so one file means the same on both brokers.

The format, as Mosquitto 2.0 documents it in mosquitto.conf(5):

    # comment
    topic [read|write|readwrite|deny] TOPIC     rules for anonymous clients,
                                                until the first `user` line
    user NAME                                   the rules below are NAME's
    topic [read|write|readwrite|deny] TOPIC
    pattern [read|write|readwrite|deny] TOPIC   for every client; %u is the
                                                user name, %c the client id

A missing access word means readwrite. A `deny` rule wins over any grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from minicloud import protocol

ACCESS_WORDS = ("read", "write", "readwrite", "deny")

# The default user names of the roles that `render_acl` writes.
CLOUD_USER = "minicloud"

# Control actions that only read the cloud's state; every client may send them.
READ_ONLY_ACTIONS = ("ls", "energy", "logs")


class AclError(ValueError):
    """An acl_file line that cannot be read."""


@dataclass(frozen=True)
class Rule:
    access: str  # one of ACCESS_WORDS
    topic: str


@dataclass
class AccessControlList:
    """The rules of one acl_file: anonymous, per user, and patterns."""

    anonymous: list[Rule] = field(default_factory=list)
    users: dict[str, list[Rule]] = field(default_factory=dict)
    patterns: list[Rule] = field(default_factory=list)

    def allows(self, username: str | None, client_id: str, topic: str, access: str) -> bool:
        """Return whether this client may `read` (receive, subscribe) or `write` (publish) `topic`.

        `topic` may be a subscription filter with + and #: then it is allowed
        only when every topic it can match is allowed.
        """
        rules = self.users.get(username, []) if username is not None else self.anonymous
        candidates = [(rule.access, rule.topic) for rule in rules]
        for rule in self.patterns:
            expanded = _expand_pattern(rule.topic, username, client_id)
            if expanded is not None:
                candidates.append((rule.access, expanded))

        granted = False
        for rule_access, rule_topic in candidates:
            if rule_access == "deny":
                if _filters_overlap(rule_topic, topic):
                    return False
            elif rule_access in (access, "readwrite") and _filter_covers(rule_topic, topic):
                granted = True
        return granted


def grants_anyone(acl: AccessControlList, topic: str, access: str) -> bool:
    """Return whether a named user, anonymous clients, or every user through a pattern may `access` `topic`."""
    if any(acl.allows(user, "", topic, access) for user in acl.users):
        return True
    # A user name found in no `user` line gets the pattern rules only.
    return acl.allows(None, "", topic, access) or acl.allows("minicloud-acl-check", "minicloud-acl-check", topic, access)


def parse_acl(text: str, *, source: str = "acl_file") -> AccessControlList:
    """Parse acl_file text; raise AclError naming the line and the fix."""
    acl = AccessControlList()
    current: list[Rule] = acl.anonymous
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        where = f"{source} line {number}"
        if keyword == "user":
            if not rest:
                raise AclError(f"{where}: 'user' needs a user name, as in 'user alice'")
            current = acl.users.setdefault(rest, [])
        elif keyword in ("topic", "pattern"):
            rule = _parse_rule(rest, where, keyword)
            (acl.patterns if keyword == "pattern" else current).append(rule)
        else:
            raise AclError(f"{where}: unknown keyword {keyword!r}; expected 'user', 'topic' or 'pattern'")
    return acl


def load_acl(path: Path) -> AccessControlList:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AclError(f"cannot read the ACL file {path}: {exc.strerror}") from exc
    return parse_acl(text, source=str(path))


def render_acl(namespace: str = protocol.DEFAULT_NAMESPACE, *, cloud_user: str = CLOUD_USER, admins: list[str] | None = None) -> str:
    """Write the ACL of minicloud's three roles: the cloud, admins and clients.

    Every authenticated user is a client: it may invoke, read state, events
    and logs, send the read-only control actions, and read replies under
    NS/replies/USERNAME/. Admins may also deploy, scale and remove. Only the
    cloud may publish state, events, logs and replies.
    """
    ns = namespace
    lines = [
        f"# minicloud ACL for the namespace {ns!r}, in Mosquitto's acl_file format.",
        "# Generated by 'minicloud acl'. Brokers that use it must refuse anonymous clients (a password file).",
        "",
        "# Every user is a client: invoke, read the state, events and logs, and read",
        "# its own replies. Reply topics are NS/replies/USERNAME/..., which the",
        "# minicloud client library picks by itself when it has a user name.",
        f"pattern write {ns}/invoke/+",
        *(f"pattern write {ns}/control/{action}" for action in READ_ONLY_ACTIONS),
        f"pattern read {ns}/state/#",
        f"pattern read {ns}/events/#",
        f"pattern read {ns}/logs/#",
        f"pattern read {ns}/replies/%u/#",
        "",
        "# The cloud process (gateway and controller). Workers have no bus connection.",
        f"user {cloud_user}",
        f"topic read {ns}/invoke/+",
        f"topic read {ns}/control/+",
        f"topic write {ns}/replies/#",
        f"topic write {ns}/state/#",
        f"topic write {ns}/events/#",
        f"topic write {ns}/logs/#",
    ]
    for admin in admins or []:
        lines += [
            "",
            "# An admin: deploy (which loads code onto the cloud's host), scale, remove.",
            f"user {admin}",
            f"topic write {ns}/control/+",
        ]
    return "\n".join(lines) + "\n"


def _parse_rule(rest: str, where: str, keyword: str) -> Rule:
    access, _, topic = rest.partition(" ")
    if access not in ACCESS_WORDS:
        # "topic a/b" with no access word means readwrite.
        access, topic = "readwrite", rest
    topic = topic.strip()
    if not topic:
        raise AclError(f"{where}: {keyword!r} needs a topic, as in '{keyword} read minicloud/state/#'")
    if not _is_valid_filter(topic):
        raise AclError(f"{where}: invalid topic filter {topic!r}: '#' must be the last level, and + and # fill a whole level")
    return Rule(access, topic)


def _expand_pattern(topic: str, username: str | None, client_id: str) -> str | None:
    """Substitute %u and %c, or return None when a value would widen the rule."""
    if "%u" in topic:
        # Mosquitto skips a %u rule for anonymous clients and for names that
        # would turn into wildcards or extra levels.
        if not username or any(character in username for character in "+#/"):
            return None
        topic = topic.replace("%u", username)
    if "%c" in topic:
        if not client_id or any(character in client_id for character in "+#/"):
            return None
        topic = topic.replace("%c", client_id)
    return topic


def _is_valid_filter(topic: str) -> bool:
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def _filter_covers(rule: str, requested: str) -> bool:
    """Return whether every topic that `requested` matches also matches `rule`."""
    rule_levels = rule.split("/")
    requested_levels = requested.split("/")
    for index, rule_level in enumerate(rule_levels):
        if rule_level == "#":
            return True
        if index >= len(requested_levels):
            return False
        requested_level = requested_levels[index]
        if requested_level == "#":
            return False
        if rule_level == "+":
            continue
        if rule_level != requested_level:
            return False
    return len(requested_levels) == len(rule_levels)


def _filters_overlap(first: str, second: str) -> bool:
    """Return whether some topic matches both filters."""
    first_levels = first.split("/")
    second_levels = second.split("/")
    for index in range(max(len(first_levels), len(second_levels))):
        a = first_levels[index] if index < len(first_levels) else None
        b = second_levels[index] if index < len(second_levels) else None
        if a == "#" or b == "#":
            return True
        if a is None or b is None:
            return False
        if a != b and a != "+" and b != "+":
            return False
    return True
