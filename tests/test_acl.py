"""The ACL and password file readers that the embedded broker shares with Mosquitto's formats."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess

import pytest

from minicloud.acl import AclError, parse_acl, render_acl
from minicloud.passwords import PasswordFileError, load_password_file, set_password, verify_password

ROLES = parse_acl(render_acl(admins=["alice"]))


@pytest.mark.parametrize(
    ("user", "topic", "access", "allowed"),
    [
        ("bob", "minicloud/invoke/hello", "write", True),
        ("bob", "minicloud/control/ls", "write", True),
        ("bob", "minicloud/control/deploy", "write", False),
        ("alice", "minicloud/control/deploy", "write", True),
        ("bob", "minicloud/state/pools", "read", True),
        ("bob", "minicloud/state/pools", "write", False),
        ("bob", "minicloud/state/#", "read", True),
        ("bob", "minicloud/#", "read", False),
        ("bob", "minicloud/replies/bob/abc", "read", True),
        ("bob", "minicloud/replies/bob/#", "read", True),
        ("bob", "minicloud/replies/alice/abc", "read", False),
        ("bob", "minicloud/replies/+/abc", "read", False),
        ("bob", "minicloud/replies/#", "read", False),
        ("bob", "minicloud/replies/alice/abc", "write", False),
        ("minicloud", "minicloud/replies/alice/abc", "write", True),
        ("minicloud", "minicloud/invoke/+", "read", True),
        ("minicloud", "minicloud/state/pools", "write", True),
        (None, "minicloud/replies/x", "read", False),
        ("bob", "other/topic", "read", False),
    ],
)
def test_generated_roles_allow(user, topic, access, allowed):
    assert ROLES.allows(user, "client-1", topic, access) is allowed


def test_wildcard_user_name_gets_no_pattern():
    # "+" as a user name would otherwise read every user's replies.
    assert not ROLES.allows("+", "client-1", "minicloud/replies/alice/abc", "read")
    assert not ROLES.allows("a/b", "client-1", "minicloud/replies/a/b/abc", "read")


def test_deny_wins_and_client_id_patterns():
    acl = parse_acl(
        "topic read public/#\n"
        "user carol\n"
        "topic readwrite lab/#\n"
        "topic deny lab/secret/#\n"
        "pattern write devices/%c/out\n"
    )
    assert acl.allows(None, "x", "public/news", "read")
    assert not acl.allows(None, "x", "public/news", "write")
    assert acl.allows("carol", "x", "lab/notes", "write")
    assert not acl.allows("carol", "x", "lab/secret/key", "read")
    assert not acl.allows("carol", "x", "lab/#", "read")
    assert acl.allows("carol", "dev-7", "devices/dev-7/out", "write")
    assert not acl.allows("carol", "dev-7", "devices/dev-8/out", "write")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user\n", "line 1: 'user' needs a user name"),
        ("topic read\n", "line 1: 'topic' needs a topic"),
        ("topic read a/#/b\n", "line 1: invalid topic filter 'a/#/b'"),
        ("# fine\nallow all\n", "line 2: unknown keyword 'allow'"),
    ],
)
def test_broken_acl_lines_are_named(text, message):
    with pytest.raises(AclError, match=message):
        parse_acl(text, source="acl")


def test_passwords_round_trip_and_reject_wrong_ones(tmp_path):
    path = tmp_path / "passwords"
    set_password(path, "alice", "correct horse")
    set_password(path, "bob", "battery staple")
    entries = load_password_file(path)
    assert verify_password("correct horse", entries["alice"])
    assert not verify_password("battery staple", entries["alice"])
    assert not verify_password("", entries["bob"])
    assert not verify_password("anything", "$7$101$not base64!$xx")


def test_sha512_password_form_read():
    salt = b"0123456789ab"
    stored = f"$6${base64.b64encode(salt).decode()}${base64.b64encode(hashlib.sha512(b'pw' + salt).digest()).decode()}"
    assert verify_password("pw", stored)
    assert not verify_password("other", stored)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_mosquitto_passwd_file_read(tmp_path):
    path = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), "dave", "s3cret"], check=True, capture_output=True, timeout=30)
    assert verify_password("s3cret", load_password_file(path)["dave"])


def test_bad_password_files_are_named(tmp_path):
    path = tmp_path / "passwords"
    path.write_text("")
    with pytest.raises(PasswordFileError, match="has no users"):
        load_password_file(path)
    path.write_text("alice:$7$101$abc$def\nbob:plain\n")
    with pytest.raises(PasswordFileError, match="line 2"):
        load_password_file(path)
    with pytest.raises(PasswordFileError, match="invalid user name"):
        set_password(path, "a/b", "pw")
