"""A real OpenSSH server for the GitOps SSH tests: ``sshd -D -e -f <config>`` in the foreground, on a free port
of 127.0.0.1, with everything of its own under one directory (scripts/setup installs openssh-server; the
package's own service is never started).

* Its host key (ed25519, the only one: libssh2 negotiates it whatever its preference order) and two client
  keys, ``right_key`` (in its ``authorized_keys``) and ``wrong_key`` (not), come from ``ssh-keygen``.
* ``sshd_config``: ``AuthorizedKeysFile`` in the directory, ``StrictModes no`` (pytest's directories are not
  sshd's idea of safe), ``UsePAM no``, public keys only, ``AllowUsers`` the test's own user, and
  ``ForceCommand git-shell -c "$SSH_ORIGINAL_COMMAND"``: only ``git-upload-pack``/``git-receive-pack`` run,
  on the absolute paths of bare repositories under ``repos/``. ``LogLevel VERBOSE`` logs every public key
  offered (``Accepted``/``Failed publickey … SHA256:…``), so a test can tell that none was.
* sshd wants an absolute config path (it re-executes itself). As root it also wants its
  privilege-separation directory ``/run/sshd`` (compiled in; Debian's init script creates it, the package
  leaves that to the init system), created here when missing, mode 0755 as Debian's own. As any other user
  it runs without privilege separation and can let in only that user, which is the one the URL names.

Nothing here skips: a missing sshd, or one that will not start, fails the tests with its log.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from forge.embedded.gitops import create_gitops_repository
from forge.embedded.process import ServiceProcess, free_port, start_service, tcp_ready

_SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
_PRIVSEP_DIR = Path("/run/sshd")


@dataclass
class SshServer:
    """One running sshd; ``root`` holds its keys, config, log and served repositories."""

    root: Path
    port: int
    user: str
    process: ServiceProcess

    @property
    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA…`` of the server's host key."""
        key_type, blob, *_ = (self.root / "host_ed25519_key.pub").read_text().split()
        return f"{key_type} {blob}"

    def known_hosts_line(self, name: str | None = None) -> str:
        """A known_hosts line for this server (by default as ``[127.0.0.1]:<port>``, how it is looked up)."""
        return f"{name or f'[127.0.0.1]:{self.port}'} {self.host_public_key}\n"

    def private_key(self, name: str) -> str:
        """The OpenSSH text of a client key: ``right_key`` (authorized) or ``wrong_key`` (not)."""
        return (self.root / name).read_text()

    def fingerprint(self, name: str) -> str:
        """``SHA256:…`` of a key, as sshd logs it."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(self.root / f"{name}.pub")], check=True, capture_output=True, text=True
        ).stdout
        return out.split()[1]

    def repository(self, name: str) -> Path:
        """A bare GitOps repository seeded like the embedded one, served at ``url(name)``."""
        return Path(create_gitops_repository(self.root / "repos" / f"{name}.git"))

    def url(self, name: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.root / 'repos' / name}.git"

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.stop()


def start_sshd(root: Path) -> SshServer:
    sshd = _sshd_binary()
    root.mkdir(parents=True, exist_ok=True)
    for name in ("host_ed25519_key", "right_key", "wrong_key"):
        _keygen(root / name)
    shutil.copy(root / "right_key.pub", root / "authorized_keys")
    (root / "repos").mkdir(exist_ok=True)
    if os.geteuid() == 0 and not _PRIVSEP_DIR.is_dir():
        _PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    port = free_port()
    user = pwd.getpwuid(os.geteuid()).pw_name  # the account sshd will check, not $USER
    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {root / 'host_ed25519_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        f"AllowUsers {user}\n"
        "PermitRootLogin prohibit-password\n"
        "PidFile none\n"
        "LogLevel VERBOSE\n"
        'ForceCommand git-shell -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    process = start_service(
        "sshd",
        [sshd, "-D", "-e", "-f", str(config.resolve())],
        url=f"ssh://127.0.0.1:{port}",
        ready=tcp_ready(port),
        log=root / "sshd.log",
    )
    return SshServer(root, port, user, process)


def _sshd_binary() -> str:
    found = next((p for p in _SSHD_CANDIDATES if Path(p).exists()), None) or shutil.which("sshd")
    if found is None:
        raise RuntimeError("sshd is not installed (openssh-server): run scripts/setup as root")
    return found


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
