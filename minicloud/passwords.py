"""Password files in Mosquitto's format, for both brokers.

A line is `user:$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 with a
base64 salt and hash, as `mosquitto_passwd` writes since Mosquitto 2.0.
Lines of the older `$6$SALT$HASH` form (one SHA-512 of password and salt)
are accepted when reading. `minicloud passwd` writes `$7$` lines, so a file
made with it or with `mosquitto_passwd` works with either broker.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default in Mosquitto 2.0
SALT_BYTES = 12
HASH_BYTES = 64


class PasswordFileError(ValueError):
    """A password file that cannot be read or contains a line in an unknown form."""


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Return whether `password` matches a stored `$7$` or `$6$` hash; False for any other form."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations = int(parts[2])
            salt = base64.b64decode(parts[3], validate=True)
            expected = base64.b64decode(parts[4], validate=True)
            actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
            return hmac.compare_digest(actual, expected)
        if len(parts) == 4 and parts[1] == "6":
            salt = base64.b64decode(parts[2], validate=True)
            expected = base64.b64decode(parts[3], validate=True)
            actual = hashlib.sha512(password.encode() + salt).digest()
            return hmac.compare_digest(actual, expected)
    except (ValueError, binascii.Error):
        return False
    return False


def load_password_file(path: Path) -> dict[str, str]:
    """Read `user:hash` lines; raise PasswordFileError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PasswordFileError(f"cannot read the password file {path}: {exc.strerror}") from exc
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, separator, stored = line.partition(":")
        if not separator or not user or not stored.startswith(("$7$", "$6$")):
            raise PasswordFileError(
                f"{path} line {number}: expected 'user:$7$...' as written by 'minicloud passwd' or mosquitto_passwd; "
                "plain-text passwords are not accepted"
            )
        entries[user] = stored
    if not entries:
        raise PasswordFileError(f"{path} has no users; add one with 'minicloud passwd {path} USER'")
    return entries


def set_password(path: Path, user: str, password: str) -> None:
    """Add `user` to the file, or replace its password; create the file (mode 0600) when missing."""
    if not user or ":" in user or any(character in user for character in "+#/ \t"):
        raise PasswordFileError(f"invalid user name {user!r}: use letters, digits, '-', '_' or '.'")
    lines = []
    if path.exists():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise PasswordFileError(f"cannot read the password file {path}: {exc.strerror}") from exc
    entry = f"{user}:{hash_password(password)}"
    replaced = False
    for index, line in enumerate(lines):
        if line.partition(":")[0] == user:
            lines[index] = entry
            replaced = True
    if not replaced:
        lines.append(entry)

    # Written to a new file first, so that a failure leaves the old file whole.
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as output:
        output.write("\n".join(lines) + "\n")
    os.replace(temporary, path)
