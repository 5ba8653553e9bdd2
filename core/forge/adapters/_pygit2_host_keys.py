"""How an SSH host key reaches us from libgit2 (the host-key check of ``forge.adapters._git_remote_auth``).

pygit2 (1.21) hands its Python ``certificate_check`` ``None`` instead of an SSH host's key, and by default
lets every SSH host through. So ``AuthCallbacks`` put ``CERTIFICATE_CHECK`` (a cffi callback)
into the option structs pygit2 builds for each fetch, push and connect, in place of pygit2's own. It reads libgit2's
``git_cert_hostkey`` through a struct declared here (pygit2's declaration stops before the raw key), only
when its ``type`` says the raw key is there, and hands host and key to the payload's ``check_host_key``
(which raises to refuse). Nothing may cross into C: an exception is left in pygit2's slot for it and
``GIT_EUSER`` stops the operation, which pygit2 then raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cffi  # type: ignore[import-untyped]  # pygit2's own FFI (a dependency of pygit2), untyped
import pygit2
from pygit2.ffi import C

from forge.adapters._known_hosts import HostKey, HostKeyRejected, KnownHosts

__all__ = ["CERTIFICATE_CHECK", "HostTrust"]


@dataclass(frozen=True, slots=True)
class HostTrust:
    """What an SSH remote's host key is checked against: the known_hosts entries and the remote's port
    (libgit2 names the host it connected to, not the port)."""

    known_hosts: KnownHosts
    port: int

    def verify(self, host: str, key: HostKey | None) -> None:
        if key is None:
            raise HostKeyRejected(f"libgit2 did not hand over the raw host key of {host}")
        self.known_hosts.verify(host, self.port, key)


# libgit2's git_cert_hostkey as include/git2/cert.h declares it (libgit2 1.9, the one pygit2 1.21 ships); pygit2
# declares only its first fields. Read through this declaration only when ``type`` says the raw key is there.
_HOSTKEY = cffi.FFI()
_HOSTKEY.cdef(
    """
    typedef struct {
        int cert_type;
        unsigned int type;
        unsigned char hash_md5[16];
        unsigned char hash_sha1[20];
        unsigned char hash_sha256[32];
        int raw_type;
        const char *hostkey;
        size_t hostkey_len;
    } git_cert_hostkey;
    """
)
_GIT_CERT_SSH_RAW = 1 << 3


def _presented_key(cert: Any) -> HostKey | None:
    hostkey = _HOSTKEY.cast("git_cert_hostkey *", int(pygit2.ffi.cast("uintptr_t", cert)))
    if not hostkey.type & _GIT_CERT_SSH_RAW or hostkey.hostkey == _HOSTKEY.NULL or hostkey.hostkey_len == 0:
        return None
    return HostKey(bytes(_HOSTKEY.buffer(hostkey.hostkey, hostkey.hostkey_len)))


def _certificate_check(cert: Any, valid: int, host: Any, payload: Any) -> int:
    """libgit2's ``git_transport_certificate_check_cb``: 0 goes on, ``GIT_PASSTHROUGH`` keeps libgit2's own
    verdict (TLS: OpenSSL's), ``GIT_EUSER`` stops with the exception left for pygit2 to raise."""
    callbacks = pygit2.ffi.from_handle(payload)
    try:
        if cert == pygit2.ffi.NULL or cert.cert_type != C.GIT_CERT_HOSTKEY_LIBSSH2:
            return int(C.GIT_PASSTHROUGH)
        callbacks.check_host_key(pygit2.ffi.string(host).decode(errors="replace"), _presented_key(cert))
    except BaseException as exc:  # noqa: BLE001 - nothing may cross into C; pygit2 re-raises it after the call
        callbacks._stored_exception = exc  # noqa: SLF001 - pygit2's slot for a callback's exception
        return int(C.GIT_EUSER)
    return 0


# error=GIT_EUSER: should anything escape (it cannot), libgit2 stops instead of trusting the host
CERTIFICATE_CHECK = pygit2.ffi.callback(
    "git_transport_certificate_check_cb", _certificate_check, error=int(C.GIT_EUSER)
)
