"""The SSH host key check the pygit2 adapter puts into libgit2's options, called here the way libgit2 calls it (a
``git_cert_hostkey`` built in memory, through the C function pointer); a real sshd runs in
tests/integration/gitops/test_ssh.py."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path
from typing import Any

import pygit2
import pytest
from pygit2.ffi import C

from forge.adapters._git_remote_auth import GitCredentials, ssh_port
from forge.adapters._known_hosts import HostKey, HostKeyRejected, KnownHosts
from forge.adapters._pygit2_host_keys import _HOSTKEY, CERTIFICATE_CHECK, HostTrust
from forge.adapters.pygit2_gitops import Pygit2GitOps, _Callbacks
from forge.errors import InvalidInputError


def _key(seed: int) -> HostKey:
    body = hashlib.sha256(bytes([seed])).digest()
    return HostKey(struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + body)


KEY, OTHER = _key(1), _key(2)
KNOWN = KnownHosts.parse(f"[git.example]:2222 ssh-ed25519 {base64.b64encode(KEY.blob).decode()}\n", "known_hosts")


def _check(callbacks: _Callbacks, key: HostKey | None, host: bytes = b"git.example", cert_type: int = 2) -> int:
    """Call ``CERTIFICATE_CHECK`` as libgit2 does, with a ``git_cert_hostkey`` holding ``key`` (raw)."""
    cert = _HOSTKEY.new("git_cert_hostkey *")
    cert.cert_type = cert_type
    keep: list[Any] = []
    if key is not None:
        raw = _HOSTKEY.new("char[]", key.blob)
        keep.append(raw)
        cert.type = 1 << 3  # GIT_CERT_SSH_RAW
        cert.hostkey = raw
        cert.hostkey_len = len(key.blob)
    handle = pygit2.ffi.new_handle(callbacks)
    parent = pygit2.ffi.cast("git_cert *", int(_HOSTKEY.cast("uintptr_t", cert)))
    return int(CERTIFICATE_CHECK(parent, 0, pygit2.ffi.new("char[]", host), handle))


def _callbacks(trust: HostTrust | None = None) -> _Callbacks:
    return _Callbacks(GitCredentials(), trust)


def test_the_known_key_goes_on() -> None:
    assert _check(_callbacks(HostTrust(KNOWN, 2222)), KEY) == 0


def test_another_key_stops_libgit2_with_the_reason_left_for_pygit2() -> None:
    callbacks = _callbacks(HostTrust(KNOWN, 2222))
    assert _check(callbacks, OTHER) == C.GIT_EUSER
    stored: object = callbacks._stored_exception
    assert isinstance(stored, HostKeyRejected)
    assert str(stored) == (
        f"the host key of [git.example]:2222 ({OTHER}) is not the one on line 1 of known_hosts: "
        "the host's key changed, or someone is in between"
    )


def test_the_port_is_the_remotes() -> None:
    callbacks = _callbacks(HostTrust(KNOWN, 22))
    assert _check(callbacks, KEY) == C.GIT_EUSER
    assert str(callbacks._stored_exception).startswith("git.example is not in known_hosts")


def test_no_raw_key_is_refused() -> None:
    callbacks = _callbacks(HostTrust(KNOWN, 2222))
    assert _check(callbacks, None) == C.GIT_EUSER
    assert str(callbacks._stored_exception) == "libgit2 did not hand over the raw host key of git.example"


def test_a_host_key_from_a_remote_not_configured_as_ssh_is_refused() -> None:
    callbacks = _callbacks(None)
    assert _check(callbacks, KEY) == C.GIT_EUSER
    assert "presented an SSH host key, but the remote's URL is not an SSH URL" in str(callbacks._stored_exception)


def test_tls_keeps_libgit2s_verdict() -> None:
    assert _check(_callbacks(None), None, cert_type=1) == C.GIT_PASSTHROUGH  # GIT_CERT_X509


def test_pygit2s_own_hook_refuses_ssh_and_keeps_tls_verdicts() -> None:
    """Called only by a pygit2 that did not take our C callback: it has no key to check."""
    with pytest.raises(HostKeyRejected, match=r"^pygit2 did not hand over the host key of git\.example "):
        _callbacks(HostTrust(KNOWN, 2222)).certificate_check(None, True, b"git.example")
    assert _callbacks(None).certificate_check(None, True, b"git.example") is True
    assert _callbacks(None).certificate_check(None, False, b"git.example") is False


def test_the_options_pygit2_builds_get_our_check() -> None:
    callbacks = _callbacks(None)
    fetch = pygit2.ffi.new("git_fetch_options *")
    push = pygit2.ffi.new("git_push_options *")
    callbacks.fetch_options = fetch
    callbacks.push_options = push
    assert fetch.callbacks.certificate_check == CERTIFICATE_CHECK
    assert push.callbacks.certificate_check == CERTIFICATE_CHECK
    assert callbacks.fetch_options is fetch


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("ssh://git@git.example/acme/gitops.git", 22),
        ("ssh://git@git.example:2222/acme/gitops.git", 2222),
        ("git+ssh://git.example/acme/gitops.git", 22),
        ("ssh+git://git@[::1]:2222/gitops.git", 2222),
        ("git@git.example:acme/gitops.git", 22),
        ("https://git.example/acme/gitops.git", None),
        ("/srv/gitops.git", None),
        ("file:///srv/gitops.git", None),
    ],
)
def test_which_remotes_are_ssh(url: str, port: int | None) -> None:
    assert ssh_port(url) == port


def test_a_bad_port_is_refused_with_the_url_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"^gitops: ssh://git@git.example:99999/x.git: not a port number$"):
        Pygit2GitOps("ssh://git:pw@git.example:99999/x.git", tmp_path)
