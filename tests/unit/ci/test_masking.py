"""SecretMasker: secret values never reach the log, however the output is chunked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from forge.workflows.workers.executors import SecretMasker


def _through(masker: SecretMasker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


def test_masks_a_secret_split_across_chunks() -> None:
    masker = SecretMasker(["hunter2"])
    assert _through(masker, [b"token=hun", b"ter", b"2 done\n"]) == b"token=*** done\n"


def test_holds_back_only_a_possible_start_of_a_secret() -> None:
    masker = SecretMasker(["s3cret"])
    assert masker.feed(b"line one\n") == b"line one\n"
    assert masker.feed(b"value s3") == b"value "
    assert masker.feed(b"x\n") == b"s3x\n"
    assert masker.flush() == b""


def test_longest_secret_first_and_multiline_secrets_by_line() -> None:
    masker = SecretMasker(["abc", "abcdef", "-----BEGIN KEY-----\nMIIEvQIBADAN\n-----END KEY-----", ""])
    out = _through(masker, [b"abcdef abc\n", b"MIIEvQIBADAN\n"])
    assert out == b"*** ***\n***\n"


def test_no_secrets_passes_everything_through() -> None:
    masker = SecretMasker([])
    assert masker.feed(b"abc") == b"abc"
    assert masker.flush() == b""


_alphabet = st.sampled_from(list(b"ab\nx"))
_secret = st.text(alphabet="abx", min_size=2, max_size=6)


@given(
    secrets=st.lists(_secret, min_size=1, max_size=3),
    output=st.lists(st.binary(max_size=12), max_size=8),
)
def test_chunking_never_changes_the_output_and_never_leaks(secrets: list[str], output: list[bytes]) -> None:
    whole = _through(SecretMasker(secrets), [b"".join(output)])
    chunked = _through(SecretMasker(secrets), output)
    bytewise = _through(SecretMasker(secrets), [bytes([b]) for b in b"".join(output)])
    assert chunked == whole == bytewise
    for secret in secrets:
        assert secret.encode() not in whole.replace(b"***", b"\0")
