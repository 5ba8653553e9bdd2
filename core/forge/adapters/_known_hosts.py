"""known_hosts files, and the one question the GitOps adapter asks them: is this the key of that SSH host?

The format is OpenSSH's (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"), one entry a line::

    [@revoked | @cert-authority] hosts key-type base64-key [comment]

``hosts`` is either a comma-separated list of patterns (``*`` and ``?`` wildcards, ``!`` negates,
``[host]:port`` for a port other than 22) or one hashed name, ``|1|<base64 salt>|<base64
HMAC-SHA1(salt, name)>`` (what ``ssh-keygen -H`` and ``HashKnownHosts yes`` write). A host is looked up
the way ssh(1) looks it up: as ``host`` on port 22, as ``[host]:port`` on any other port (an entry
without a port vouches for port 22 only); names compare without case.

The verdict on the key a host presented (``KnownHosts.verify``), first match wins:

* a ``@revoked`` entry naming the host with this key: refused, whatever the other lines say;
* an entry naming the host with this key: trusted;
* entries naming the host with another key of the same type: refused as a changed key (the host was
  reinstalled, or someone is in between: a person decides, by editing the file);
* entries naming the host with keys of other types only: refused, naming the types the file has (the
  server offered a type the file does not list: add the host's key of that type);
* no entry naming the host: refused as unknown.

``@cert-authority`` lines are read (a typo in one is still reported) and otherwise ignored: they vouch
for host certificates, which libssh2 never presents.

Decisions: a line that cannot be read fails the whole file with ``KnownHostsError`` naming the file and
the line; ssh(1) skips such lines, but here a typo would turn into an "unknown host" far from its cause.
Keys compare as their SSH wire-format blob (the base64 of the line, which starts with the key type),
never by fingerprint. The module is pure: it reads text and compares bytes, it connects to nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostKey", "HostKeyRejected", "KnownHosts", "KnownHostsError", "lookup_name"]

_HASHED = "|1|"
_SHA1_BYTES = 20
_MARKERS = ("@revoked", "@cert-authority")
_KEY_TYPE = re.compile(r"^[A-Za-z0-9@._+-]{1,64}$")


class KnownHostsError(ValueError):
    """The file cannot be read, or a line of it is not a known_hosts entry (the message names file and line)."""


class HostKeyRejected(Exception):  # noqa: N818 - a verdict, turned into AuthenticationError by the adapter
    """The key a host presented is not trusted for it; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class HostKey:
    """A public key as SSH sends it: the wire-format blob, which starts with the key type."""

    blob: bytes

    @property
    def key_type(self) -> str:
        return _blob_type(self.blob) or "unknown"

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64>``, as ``ssh-keygen -l`` and sshd's log print it."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    def __str__(self) -> str:
        return f"{self.key_type} {self.fingerprint}"


@dataclass(frozen=True, slots=True)
class _Entry:
    line: int
    marker: str  # "", "@revoked" or "@cert-authority"
    patterns: tuple[tuple[bool, re.Pattern[str]], ...]  # (negated, pattern); empty when hashed
    hashed: tuple[bytes, bytes] | None  # (salt, HMAC-SHA1 of the name)
    key: HostKey

    def names(self, name: str) -> bool:
        """``name`` (already lower-cased, ``[host]:port`` off port 22) is one this entry speaks for."""
        if self.hashed is not None:
            salt, digest = self.hashed
            return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
        named = False
        for negated, pattern in self.patterns:
            if pattern.fullmatch(name):
                if negated:
                    return False  # a negated match vetoes the line, as in ssh(1)
                named = True
        return named


def lookup_name(host: str, port: int) -> str:
    """The name a host is looked up by: ``host`` on port 22, ``[host]:port`` on any other."""
    host = host.lower()
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True, slots=True)
class KnownHosts:
    """The entries of one known_hosts file; ``path`` is how messages name it."""

    path: str
    entries: tuple[_Entry, ...]

    @classmethod
    def load(cls, path: Path) -> KnownHosts:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KnownHostsError(f"{path} does not exist") from None
        except OSError as exc:
            raise KnownHostsError(f"{path}: cannot be read: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise KnownHostsError(f"{path} line {line}: not UTF-8 text") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, path: str) -> KnownHosts:
        entries = []
        for number, line in enumerate(text.split("\n"), start=1):  # lines as ssh(1) and editors count them
            entry = _parse_line(line, path, number)
            if entry is not None:
                entries.append(entry)
        return cls(path, tuple(entries))

    def verify(self, host: str, port: int, key: HostKey) -> None:
        """Return when ``key`` is trusted for ``host`` on ``port``; else raise ``HostKeyRejected`` saying why."""
        name = lookup_name(host, port)
        naming = [e for e in self.entries if e.marker != "@cert-authority" and e.names(name)]
        for entry in naming:
            if entry.marker == "@revoked" and entry.key == key:
                raise HostKeyRejected(f"the host key of {name} ({key}) is revoked on line {entry.line} of {self.path}")
        known = [e for e in naming if not e.marker]
        if any(e.key == key for e in known):
            return
        same_type = [e for e in known if e.key.key_type == key.key_type]
        if same_type:
            raise HostKeyRejected(
                f"the host key of {name} ({key}) is not the one on line {same_type[0].line} of {self.path}: "
                "the host's key changed, or someone is in between"
            )
        if known:
            listed = ", ".join(f"{e.key.key_type} (line {e.line})" for e in known)
            raise HostKeyRejected(
                f"{self.path} has no {key.key_type} key for {name}, only {listed}; {name} presented {key}"
            )
        raise HostKeyRejected(f"{name} is not in {self.path} (it presented {key})")


def _parse_line(line: str, path: str, number: int) -> _Entry | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    where = f"{path} line {number}"
    marker = ""
    if fields[0].startswith("@"):
        marker = fields.pop(0)
        if marker not in _MARKERS:
            raise KnownHostsError(f"{where}: unknown marker {marker!r} (only @revoked and @cert-authority exist)")
    if len(fields) < 3:
        raise KnownHostsError(f"{where}: not a known_hosts entry ('[marker] hosts key-type base64-key [comment]')")
    hosts, key_type, encoded = fields[:3]
    if not _KEY_TYPE.match(key_type):
        raise KnownHostsError(f"{where}: {key_type[:40]!r} is not a key type")
    blob = _base64(encoded, where, "the key")
    embedded = _blob_type(blob)
    if embedded is None:
        raise KnownHostsError(f"{where}: the key is not an SSH public key")
    if embedded != key_type:
        raise KnownHostsError(f"{where}: the line says {key_type} but the key is {embedded}")
    if hosts.startswith(_HASHED):
        salt_and_hash = hosts[len(_HASHED) :].split("|")
        if len(salt_and_hash) != 2:
            raise KnownHostsError(f"{where}: a hashed host is '|1|<base64 salt>|<base64 hash>'")
        salt, digest = (_base64(part, where, "the hashed host") for part in salt_and_hash)
        if len(salt) != _SHA1_BYTES or len(digest) != _SHA1_BYTES:
            raise KnownHostsError(f"{where}: a hashed host's salt and hash are {_SHA1_BYTES} bytes each")
        return _Entry(number, marker, (), (salt, digest), HostKey(blob))
    patterns = []
    for listed in hosts.lower().split(","):
        negated = listed.startswith("!")
        pattern = listed.removeprefix("!")
        if not pattern:
            raise KnownHostsError(f"{where}: an empty host pattern in {hosts!r}")
        patterns.append((negated, _glob(pattern)))
    return _Entry(number, marker, tuple(patterns), None, HostKey(blob))


def _glob(pattern: str) -> re.Pattern[str]:
    """ssh(1)'s wildcards: ``*`` any run, ``?`` one character; everything else (``[``, ``]`` too) is itself."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def _base64(text: str, where: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KnownHostsError(f"{where}: {what} is not base64") from None


def _blob_type(blob: bytes) -> str | None:
    """The key type a wire-format public key starts with (a uint32 length, then the name)."""
    if len(blob) < 4:
        return None
    (size,) = struct.unpack(">I", blob[:4])
    name = blob[4 : 4 + size]
    if not 0 < size <= 64 or len(name) != size:
        return None
    try:
        decoded = name.decode("ascii")
    except UnicodeDecodeError:
        return None
    return decoded if _KEY_TYPE.match(decoded) else None
