"""The credential callback the pygit2 adapter hands libgit2, called the way libgit2 calls it (for real: HTTPS in
tests/integration/gitops/test_credentials.py, SSH against a real sshd in tests/integration/gitops/test_ssh.py)."""

from __future__ import annotations

import pygit2
import pytest
from pydantic import SecretStr
from pygit2.enums import CredentialType

from forge.adapters._git_remote_auth import AuthenticationFailed, GitCredentials, is_authentication_refusal
from forge.adapters.pygit2_gitops import Pygit2GitOps, _Callbacks
from forge.settings import Settings

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
SSH = GitCredentials(ssh_key=SecretStr(KEY), ssh_key_passphrase=SecretStr("open sesame"), ssh_user="deploy")


def test_ssh_asks_for_the_user_then_gets_the_key_from_memory() -> None:
    callbacks = _Callbacks(SSH)
    user = callbacks.credentials("ssh://git.example/gitops.git", None, CredentialType.USERNAME)
    assert isinstance(user, pygit2.Username)
    assert user.credential_tuple == ("deploy",)
    key = callbacks.credentials(
        "ssh://git.example/gitops.git", None, CredentialType.SSH_KEY | CredentialType.SSH_MEMORY
    )
    assert isinstance(key, pygit2.KeypairFromMemory)
    assert key.credential_tuple == ("deploy", None, KEY, "open sesame")
    assert key.credential_type is CredentialType.SSH_MEMORY


def test_the_user_of_the_url_wins() -> None:
    key = _Callbacks(SSH).credentials("git@git.example:acme/gitops.git", "git", CredentialType.SSH_KEY)
    assert isinstance(key, pygit2.KeypairFromMemory)
    assert key.credential_tuple[0] == "git"


def test_asked_again_means_refused() -> None:
    callbacks = _Callbacks(SSH)
    callbacks.credentials("ssh://git.example/gitops.git", "git", CredentialType.SSH_KEY)
    with pytest.raises(AuthenticationFailed, match=r"^the remote refused the credentials$"):
        callbacks.credentials("ssh://git.example/gitops.git", "git", CredentialType.SSH_KEY)


def test_an_ssh_remote_without_a_key_says_which_setting_is_missing() -> None:
    https_only = GitCredentials(username="forge", password=SecretStr("token"))
    with pytest.raises(AuthenticationFailed, match="asks for an SSH key and FORGE_GITOPS__SSH_KEY is not set"):
        _Callbacks(https_only).credentials("ssh://git.example/gitops.git", "git", CredentialType.SSH_KEY)


def test_https_gets_user_and_password_and_a_token_alone_gets_a_placeholder_user() -> None:
    given = _Callbacks(GitCredentials(username="forge", password=SecretStr("token"))).credentials(
        "https://git.example/gitops.git", None, CredentialType.USERPASS_PLAINTEXT
    )
    assert isinstance(given, pygit2.UserPass)
    assert given.credential_tuple == ("forge", "token")
    token_only = _Callbacks(GitCredentials(password=SecretStr("token"))).credentials(
        "https://git.example/gitops.git", None, CredentialType.USERPASS_PLAINTEXT
    )
    assert token_only.credential_tuple == ("x-access-token", "token")


def test_ssh_settings_reach_the_adapter_and_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_GITOPS__URL", "ssh://git@git.example/acme/gitops.git")
    monkeypatch.setenv("FORGE_GITOPS__SSH_KEY", KEY)
    monkeypatch.setenv("FORGE_GITOPS__SSH_KEY_PASSPHRASE", "open sesame")
    gitops = Settings().gitops
    assert KEY not in repr(gitops)
    assert "open sesame" not in repr(gitops)
    credentials = GitCredentials.from_settings(gitops)
    assert credentials == GitCredentials(
        username=None,
        password=None,
        ssh_user="git",
        ssh_key=gitops.ssh_key,
        ssh_key_passphrase=gitops.ssh_key_passphrase,
    )
    repository = Pygit2GitOps.from_settings(gitops)
    assert repository.url == "ssh://git@git.example/acme/gitops.git"  # an SSH user is no secret (Argo CD needs it)
    assert Pygit2GitOps("ssh://git:pw@git.example/x.git", repository.path.parent).url == "ssh://git@git.example/x.git"
    assert Pygit2GitOps("https://tok@git.example/x.git", repository.path.parent).url == "https://git.example/x.git"
    key = _Callbacks(credentials).credentials(gitops.url or "", "git", CredentialType.SSH_KEY)
    assert key.credential_tuple == ("git", None, KEY, "open sesame")


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        ("too many redirects or authentication replays", True),
        ("Failed to authenticate SSH session: Unable to send userauth-publickey request", True),
        ("unexpected http status code: 401", True),
        ("failed to resolve address for git.example: Name or service not known", False),
        ("unexpected http status code: 404", False),
    ],
)
def test_libgit2s_own_refusals_are_recognised(message: str, refused: bool) -> None:
    assert is_authentication_refusal(message) is refused
