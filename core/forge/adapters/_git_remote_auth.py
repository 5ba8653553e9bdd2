"""Logging in to a git remote with pygit2: credentials, SSH host-key checks and the errors they end in.

Shared by the GitOps writer (``forge.adapters.pygit2_gitops``, settings ``FORGE_GITOPS__*``) and the workers'
source mirrors (``forge.adapters.pygit2_git``, settings ``FORGE_GIT__*``); each names its own settings and
error codes (``GitRemote``), the rules are the same:

**Credentials** (``GitCredentials``: ``USERNAME``/``PASSWORD`` for HTTPS, ``SSH_KEY``/``SSH_KEY_PASSPHRASE``/
``SSH_USER`` for SSH) are handed to libgit2 by ``AuthCallbacks.credentials`` when the remote asks for them:
``UserPass`` for HTTPS (Basic auth), ``KeypairFromMemory`` for SSH; nothing is written to disk or into a
URL. The remote asking a second time in one operation means it refused them: the operation stops there
(``AuthenticationFailed``, turned into ``AuthenticationError`` by ``GitRemote.translated``: one line naming
the remote without secrets, never the secret; permanent). A remote that asks and gets nothing (none
configured, or not of a kind it accepts) fails the same way, naming the setting that is missing.
Credentials written into the URL work too but are never shown: messages use ``without_user_info``.

**SSH host keys** are checked by us, before libgit2 asks for credentials, against a known_hosts file (the
setting ``SSH_KNOWN_HOSTS``; unset: ``$HOME/.ssh/known_hosts``), read afresh for every operation
(``forge.adapters._known_hosts``). A host that is not there, or presents another key, stops the operation
(``HostKeyRejected`` → ``AuthenticationError`` with the remote's host-key code); a known_hosts file that is
missing or has an unreadable line stops it with ``InvalidInputError`` naming the file and the line. Nothing
turns the check off: left to itself, pygit2 lets every SSH host key through, which is why the check is ours
(how the key reaches us: ``forge.adapters._pygit2_host_keys``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pygit2
from pydantic import SecretStr
from pygit2.enums import CredentialType

from forge.adapters._known_hosts import HostKey, HostKeyRejected, KnownHosts, KnownHostsError
from forge.adapters._pygit2_host_keys import CERTIFICATE_CHECK, HostTrust
from forge.adapters._pygit2_local import SCP_LIKE
from forge.errors import AuthenticationError, InvalidInputError
from forge.settings import GitLoginSettings

__all__ = [
    "AuthCallbacks",
    "AuthenticationFailed",
    "GitCredentials",
    "GitRemote",
    "default_known_hosts",
    "is_authentication_refusal",
    "ssh_port",
    "without_user_info",
]

_SSH_SCHEMES = ("ssh", "ssh+git", "git+ssh")
_DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True, slots=True)
class GitCredentials:
    """What the remote may ask for: a user and password (or token) over HTTPS, a private key over SSH."""

    username: str | None = None
    password: SecretStr | None = None
    ssh_user: str = "git"
    ssh_key: SecretStr | None = None
    ssh_key_passphrase: SecretStr | None = None

    @classmethod
    def from_settings(cls, settings: GitLoginSettings) -> GitCredentials:
        return cls(
            username=settings.username,
            password=settings.password,
            ssh_user=settings.ssh_user,
            ssh_key=settings.ssh_key,
            ssh_key_passphrase=settings.ssh_key_passphrase,
        )

    def secrets(self) -> list[str]:
        """The secret values, to keep out of any message."""
        return [s.get_secret_value() for s in (self.password, self.ssh_key, self.ssh_key_passphrase) if s is not None]


class AuthenticationFailed(Exception):  # noqa: N818 - raised inside libgit2's callback, turned into AuthenticationError
    """The remote refused our credentials, or asked for some we do not have."""


_CredentialAnswer = pygit2.UserPass | pygit2.KeypairFromMemory | pygit2.Username


class AuthCallbacks(pygit2.RemoteCallbacks):
    """Answers the remote's credential requests (once: a second request is a refusal) and checks an SSH host's
    key (``trust``; ``None`` for a remote that is not SSH). ``settings`` is the prefix of the settings the
    credentials come from (``FORGE_GITOPS``, ``FORGE_GIT``), named when one is missing."""

    def __init__(self, credentials: GitCredentials, trust: HostTrust | None = None, *, settings: str) -> None:
        super().__init__()
        self._credentials = credentials
        self._trust = trust
        self._settings = settings
        self._given = False

    def credentials(self, url: str, username_from_url: str | None, allowed_types: CredentialType) -> _CredentialAnswer:
        c = self._credentials
        if allowed_types & CredentialType.USERNAME and not allowed_types & CredentialType.SSH_KEY:
            return pygit2.Username(username_from_url or c.ssh_user)  # SSH asks for the user first
        if self._given:
            raise AuthenticationFailed("the remote refused the credentials")
        self._given = True
        if allowed_types & CredentialType.SSH_KEY and c.ssh_key is not None:
            passphrase = c.ssh_key_passphrase.get_secret_value() if c.ssh_key_passphrase is not None else None
            return pygit2.KeypairFromMemory(
                username_from_url or c.ssh_user, None, c.ssh_key.get_secret_value(), passphrase
            )
        if allowed_types & CredentialType.USERPASS_PLAINTEXT and c.password is not None:
            return pygit2.UserPass(c.username or username_from_url or "x-access-token", c.password.get_secret_value())
        if allowed_types & CredentialType.SSH_KEY:
            raise AuthenticationFailed(f"the remote asks for an SSH key and {self._settings}__SSH_KEY is not set")
        raise AuthenticationFailed(
            f"the remote asks for a user and password and {self._settings}__PASSWORD is not set"
            if allowed_types & CredentialType.USERPASS_PLAINTEXT
            else f"the remote asks for credentials of a kind not supported ({allowed_types!r})"
        )

    def check_host_key(self, host: str, key: HostKey | None) -> None:
        """An SSH host presented ``key``: return to go on, raise ``HostKeyRejected`` to stop before any
        credential is sent."""
        if self._trust is None:
            raise HostKeyRejected(f"{host} presented an SSH host key, but the remote's URL is not an SSH URL")
        self._trust.verify(host, key)

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        """pygit2's own hook, called only if ``CERTIFICATE_CHECK`` did not get into the options (a pygit2
        that builds them differently): it gets no key, so an SSH remote is refused; TLS keeps libgit2's
        verdict, as pygit2 does by default."""
        if self._trust is not None:
            name = host.decode(errors="replace")
            raise HostKeyRejected(f"pygit2 did not hand over the host key of {name} (an unknown pygit2)")
        return valid

    # pygit2 builds libgit2's options for each fetch, push and connect and hands them to the payload before
    # calling libgit2: our C callback goes in there, in place of pygit2's (which drops the key).
    @property
    def fetch_options(self) -> Any:
        return self._fetch_options

    @fetch_options.setter
    def fetch_options(self, options: Any) -> None:
        options.callbacks.certificate_check = CERTIFICATE_CHECK
        self._fetch_options = options

    @property
    def push_options(self) -> Any:
        return self._push_options

    @push_options.setter
    def push_options(self, options: Any) -> None:
        options.callbacks.certificate_check = CERTIFICATE_CHECK
        self._push_options = options

    @property
    def remote_callbacks(self) -> Any:
        return self._remote_callbacks

    @remote_callbacks.setter
    def remote_callbacks(self, callbacks: Any) -> None:
        callbacks.certificate_check = CERTIFICATE_CHECK  # Remote.connect / list_heads
        self._remote_callbacks = callbacks


class GitRemote:
    """One remote as an adapter talks to it: its URL as shown (``without_user_info``), the callbacks for one
    operation and the ``AuthenticationError``/``InvalidInputError`` its login failures end in.

    Messages read ``<label>: <url>: …``; ``settings`` is the settings prefix named in them; ``auth_code`` and
    ``host_key_code`` are the error codes of a refused login and a refused host key (``None``: the
    ``AuthenticationError`` default)."""

    def __init__(
        self,
        url: str,
        credentials: GitCredentials,
        known_hosts: Path | None,
        *,
        label: str,
        settings: str,
        auth_code: str | None = None,
        host_key_code: str = "host_key_rejected",
    ):
        self.url = url
        self.shown = without_user_info(url)
        self.credentials = credentials
        self.known_hosts = known_hosts
        self.label = label
        self.settings = settings
        self._auth_code = auth_code
        self._host_key_code = host_key_code
        self.ssh_port = ssh_port(url, label=label)

    def trust(self) -> HostTrust | None:
        """For an SSH remote, what its host key is checked against, with the known_hosts file read now (a
        rotated file counts from the next operation on); ``None`` for any other remote."""
        if self.ssh_port is None:
            return None
        path = self.known_hosts or default_known_hosts()
        try:
            known_hosts = KnownHosts.load(path)
        except KnownHostsError as exc:
            setting = (
                f"{self.settings}__SSH_KNOWN_HOSTS"
                if self.known_hosts is not None
                else f"{self.settings}__SSH_KNOWN_HOSTS is not set, so $HOME/.ssh/known_hosts is read"
            )
            raise InvalidInputError(
                f"{self.label}: {self.shown}: cannot check the SSH host key: known_hosts {exc} ({setting})",
                details={"url": self.shown, "known_hosts": str(path)},
            ) from None
        return HostTrust(known_hosts, self.ssh_port)

    def callbacks(self) -> AuthCallbacks:
        """Callbacks for one operation."""
        return AuthCallbacks(self.credentials, self.trust(), settings=self.settings)

    @contextlib.contextmanager
    def translated(self, what: str, hidden: Mapping[str, str] | None = None) -> Iterator[None]:
        """Turn a refused login or host key inside the block into ``AuthenticationError`` (``what``: "fetch
        from", "push to"); any other ``pygit2.GitError`` goes on to the caller. ``hidden`` maps text to what
        stands in its place in messages (a local path)."""
        try:
            yield
        except AuthenticationFailed as exc:
            raise self.authentication_failed(what, self.scrub(str(exc), hidden)) from None
        except HostKeyRejected as exc:
            raise self.host_key_failed(what, self.scrub(str(exc), hidden)) from None
        except pygit2.GitError as exc:
            if is_authentication_refusal(str(exc)):
                raise self.authentication_failed(what, self.scrub(str(exc), hidden)) from None
            raise

    def authentication_failed(self, what: str, reason: str) -> AuthenticationError:
        return AuthenticationError(
            f"{self.label}: {self.shown}: authentication failed ({what} the remote): {self.scrub(reason)}",
            code=self._auth_code,
            details={"url": self.shown},
        )

    def host_key_failed(self, what: str, reason: str) -> AuthenticationError:
        return AuthenticationError(
            f"{self.label}: {self.shown}: host key verification failed ({what} the remote): {self.scrub(reason)}",
            code=self._host_key_code,
            details={"url": self.shown},
        )

    def scrub(self, reason: str, hidden: Mapping[str, str] | None = None) -> str:
        """One line, without ``hidden``'s keys, the URL's user info or any secret."""
        for text, placeholder in (hidden or {}).items():
            reason = reason.replace(text, placeholder)
        reason = reason.replace(self.url, self.shown)
        for secret in self.credentials.secrets():
            reason = reason.replace(secret, "***")
        return " ".join(reason.split())


def is_authentication_refusal(message: str) -> bool:
    """libgit2's own words for a refused login (when it gives up before asking us again)."""
    lowered = message.lower()
    return any(
        words in lowered
        for words in ("authenticat", "unauthorized", "status code: 401", "permission denied (publickey")
    )


def without_user_info(url: str) -> str:
    """``url`` without secrets: an HTTP(S) URL without its user info (a token is often the user), any other
    URL without a password (``ssh://git@host/…`` keeps its user, which Argo CD needs too)."""
    parsed = urlparse(url)
    if not (parsed.scheme and len(parsed.scheme) > 1 and "@" in parsed.netloc):
        return url
    userinfo, _, host = parsed.netloc.rpartition("@")
    if parsed.scheme in ("http", "https"):
        return parsed._replace(netloc=host).geturl()
    return parsed._replace(netloc=f"{userinfo.partition(':')[0]}@{host}").geturl()


def default_known_hosts() -> Path:
    """``$HOME/.ssh/known_hosts`` (left as ``~/…``, which does not exist, when there is no home)."""
    path = Path(_DEFAULT_KNOWN_HOSTS)
    with contextlib.suppress(RuntimeError):
        path = path.expanduser()
    return path


def ssh_port(url: str, *, label: str = "gitops") -> int | None:
    """The port of an SSH remote (``ssh://``, ``ssh+git://``, ``git+ssh://`` or scp-like ``user@host:path``);
    ``None`` for any other remote. A port that is not a number: ``InvalidInputError`` (``<label>: <url>: …``)."""
    parsed = urlparse(url)
    if parsed.scheme in _SSH_SCHEMES:
        try:
            return parsed.port or 22
        except ValueError:
            raise InvalidInputError(f"{label}: {without_user_info(url)}: not a port number") from None
    return 22 if "://" not in url and SCP_LIKE.match(url) else None
