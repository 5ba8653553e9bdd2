"""known_hosts parsing and the host key verdict (forge.adapters._known_hosts): plain, wildcard, negated, hashed and
``[host]:port`` names, @revoked and @cert-authority markers, and every way a line can be unreadable naming its file and
line. Hashed entries as OpenSSH writes them run against a real sshd in tests/integration/gitops/test_ssh.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.adapters._known_hosts import HostKey, HostKeyRejected, KnownHosts, KnownHostsError, lookup_name


def _key(key_type: str = "ssh-ed25519", seed: int = 1) -> HostKey:
    name = key_type.encode()
    body = hashlib.sha256(f"{key_type}{seed}".encode()).digest()
    return HostKey(struct.pack(">I", len(name)) + name + struct.pack(">I", len(body)) + body)


def _line(hosts: str, key: HostKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{hosts} {key.key_type} {base64.b64encode(key.blob).decode()}\n"


def _hashed(name: str, salt: bytes = b"s" * 20) -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _hosts(*lines: str) -> KnownHosts:
    return KnownHosts.parse("".join(lines), "/etc/forge/known_hosts")


KEY = _key()
OTHER = _key(seed=2)
RSA = _key("ssh-rsa")


def test_lookup_names_carry_the_port_only_off_22() -> None:
    assert lookup_name("Git.Example", 22) == "git.example"
    assert lookup_name("git.example", 2222) == "[git.example]:2222"


def test_a_plain_entry_in_a_list_trusts_its_key_and_names_compare_without_case() -> None:
    hosts = _hosts("# comment\n", "\n", _line("other.example,GIT.example,10.0.0.1", KEY) + "  # trailing\n")
    hosts.verify("git.EXAMPLE", 22, KEY)
    hosts.verify("10.0.0.1", 22, KEY)


def test_an_entry_without_a_port_vouches_for_port_22_only() -> None:
    hosts = _hosts(_line("git.example", KEY))
    with pytest.raises(HostKeyRejected, match=r"^\[git.example\]:2222 is not in /etc/forge/known_hosts \(it presented"):
        hosts.verify("git.example", 2222, KEY)
    _hosts(_line("[git.example]:2222", KEY)).verify("git.example", 2222, KEY)
    with pytest.raises(HostKeyRejected, match="not in"):
        _hosts(_line("[git.example]:2222", KEY)).verify("git.example", 22, KEY)


def test_wildcards_and_negation() -> None:
    hosts = _hosts(_line("*.example,!evil.example", KEY), _line("[10.0.0.?]:2222", KEY))
    hosts.verify("git.example", 22, KEY)
    hosts.verify("10.0.0.7", 2222, KEY)
    with pytest.raises(HostKeyRejected, match="not in"):
        hosts.verify("evil.example", 22, KEY)  # a negated match vetoes the line
    with pytest.raises(HostKeyRejected, match="not in"):
        hosts.verify("10.0.0.17", 2222, KEY)


def test_hashed_names_match_only_their_name() -> None:
    hosts = _hosts(_line(_hashed("[git.example]:2222"), KEY))
    hosts.verify("GIT.example", 2222, KEY)
    with pytest.raises(HostKeyRejected, match="not in"):
        hosts.verify("git.example", 22, KEY)


def test_a_hashed_entry_as_openssh_documents_it() -> None:
    # ssh-keygen -H of "localhost", salt fixed: HMAC-SHA1(salt, "localhost")
    salt = bytes(range(20))
    entry = _hashed("localhost", salt)
    assert (
        entry
        == "|1|AAECAwQFBgcICQoLDA0ODxAREhM=|"
        + base64.b64encode(hmac.new(salt, b"localhost", hashlib.sha1).digest()).decode()
    )
    _hosts(_line(entry, KEY)).verify("localhost", 22, KEY)


def test_another_key_of_the_same_type_is_a_changed_key() -> None:
    hosts = _hosts(_line("git.example", OTHER))
    with pytest.raises(HostKeyRejected) as info:
        hosts.verify("git.example", 22, KEY)
    assert str(info.value) == (
        f"the host key of git.example (ssh-ed25519 {KEY.fingerprint}) is not the one on line 1 of "
        "/etc/forge/known_hosts: the host's key changed, or someone is in between"
    )


def test_keys_of_other_types_only_say_which_types_are_there() -> None:
    hosts = _hosts(_line("git.example", RSA))
    with pytest.raises(HostKeyRejected) as info:
        hosts.verify("git.example", 22, KEY)
    assert str(info.value) == (
        "/etc/forge/known_hosts has no ssh-ed25519 key for git.example, only ssh-rsa (line 1); "
        f"git.example presented ssh-ed25519 {KEY.fingerprint}"
    )
    _hosts(_line("git.example", RSA), _line("git.example", KEY)).verify("git.example", 22, KEY)


def test_a_revoked_key_is_refused_whatever_else_the_file_says() -> None:
    hosts = _hosts(_line("git.example", KEY), _line("*", KEY, "@revoked"))
    with pytest.raises(HostKeyRejected, match=r"is revoked on line 2 of /etc/forge/known_hosts$"):
        hosts.verify("git.example", 22, KEY)
    _hosts(_line("git.example", OTHER), _line("*", KEY, "@revoked")).verify("git.example", 22, OTHER)


def test_a_cert_authority_line_vouches_for_no_plain_key() -> None:
    hosts = _hosts(_line("*.example", KEY, "@cert-authority"))
    with pytest.raises(HostKeyRejected, match="not in"):
        hosts.verify("git.example", 22, KEY)


def test_the_fingerprint_is_ssh_keygens() -> None:
    assert KEY.fingerprint == "SHA256:" + base64.b64encode(hashlib.sha256(KEY.blob).digest()).decode().rstrip("=")
    assert str(KEY) == f"ssh-ed25519 {KEY.fingerprint}"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("git.example ssh-ed25519\n", "not a known_hosts entry ('[marker] hosts key-type base64-key [comment]')"),
        (
            "@trusted git.example ssh-ed25519 AAAA\n",
            "unknown marker '@trusted' (only @revoked and @cert-authority exist)",
        ),
        ("git.example ssh-ed25519 AAAA!\n", "the key is not base64"),
        ("git.example ssh-ed25519 AAAA\n", "the key is not an SSH public key"),
        (
            _line("git.example", RSA).replace("ssh-rsa", "ssh-ed25519", 1),
            "the line says ssh-ed25519 but the key is ssh-rsa",
        ),
        ("git.example ssh(ed) AAAA\n", "'ssh(ed)' is not a key type"),
        (_line("|1|c2FsdA==", KEY), "a hashed host is '|1|<base64 salt>|<base64 hash>'"),
        (_line("|1|c2FsdA==|c2FsdA==", KEY), "a hashed host's salt and hash are 20 bytes each"),
        (_line("|1|%%%|c2FsdA==", KEY), "the hashed host is not base64"),
        (_line("git.example,,other", KEY), "an empty host pattern in 'git.example,,other'"),
        (_line("!", KEY), "an empty host pattern in '!'"),
    ],
)
def test_an_unreadable_line_names_the_file_and_the_line(line: str, reason: str) -> None:
    with pytest.raises(KnownHostsError) as info:
        _hosts(_line("good.example", KEY), "# fine\n", line)
    assert str(info.value) == f"/etc/forge/known_hosts line 3: {reason}"


def test_loading_names_a_missing_or_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(KnownHostsError, match=rf"^{tmp_path}/absent does not exist$"):
        KnownHosts.load(tmp_path / "absent")
    broken = tmp_path / "broken"
    broken.write_bytes(_line("git.example", KEY).encode() + b"caf\xe9.example ssh-ed25519 AAAA\n")
    with pytest.raises(KnownHostsError, match=rf"^{broken} line 2: not UTF-8 text$"):
        KnownHosts.load(broken)
    good = tmp_path / "good"
    good.write_text(_line("git.example", KEY))
    KnownHosts.load(good).verify("git.example", 22, KEY)


_NAME = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True)


@given(host=_NAME, port=st.integers(1, 65535), seed=st.integers(0, 1000), hashed=st.booleans())
def test_a_written_entry_trusts_exactly_its_key(host: str, port: int, seed: int, hashed: bool) -> None:
    key = _key(seed=seed)
    name = lookup_name(host, port)
    hosts = _hosts(_line(_hashed(name) if hashed else name, key))
    hosts.verify(host.upper(), port, key)
    with pytest.raises(HostKeyRejected, match="is not the one on line 1"):
        hosts.verify(host, port, _key(seed=seed + 1))


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_with_a_line_number(text: str) -> None:
    failure: KnownHostsError | None = None
    try:
        hosts = _hosts(text)
    except KnownHostsError as exc:
        failure = exc
    if failure is not None:
        assert str(failure).startswith("/etc/forge/known_hosts line ")
    else:
        with pytest.raises(HostKeyRejected):
            hosts.verify("git.example", 22, KEY)
