"""The resources layer is read in memory with limits; every refusal has a test."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest
from tests.unit.cmp.support import sample_objects

from forge.cmp.extract import read_objects
from forge.errors import InvalidInputError, LimitExceededError
from forge.releases import pack_resources

CM = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n"


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(buffer.getvalue())


def _file(name: str, data: bytes = CM) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, b""


def test_the_release_workers_layer_reads_back() -> None:
    objects = sample_objects()
    assert sorted(read_objects(pack_resources(objects)), key=json.dumps) == sorted(objects, key=json.dumps)


def test_multi_document_yaml_in_any_folder_and_other_files_ignored() -> None:
    layer = _tar(
        _special("deploy", tarfile.DIRTYPE),
        _file("deploy/all.yml", CM + b"---\n---\n" + CM.replace(b"one", b"two")),
        _file("README.md", b"not yaml: [\n"),
        _file("./extra.yaml", b"# nothing\n---\n" + CM.replace(b"one", b"three")),
    )
    assert [o["metadata"]["name"] for o in read_objects(layer)] == ["one", "two", "three"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_special("resources/link.yaml", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_special("resources/hard.yaml", tarfile.LNKTYPE, "resources/a.yaml"), "hard link"),
        (_special("resources/dev.yaml", tarfile.CHRTYPE), "device"),
        (_special("resources/blk.yaml", tarfile.BLKTYPE), "device"),
        (_special("resources/fifo.yaml", tarfile.FIFOTYPE), "FIFO"),
        (_file("/etc/x.yaml"), "absolute"),
        (_file("resources/../../x.yaml"), r"'\.\.'"),
        (_file("../x.yaml"), r"'\.\.'"),
    ],
)
def test_unsafe_entries_are_refused(member: tuple[tarfile.TarInfo, bytes], reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        read_objects(_tar(_file("resources/a.yaml"), member))


def test_a_name_twice_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="appears twice"):
        read_objects(_tar(_file("a.yaml"), _file("./a.yaml")))


def test_too_many_entries_are_refused() -> None:
    layer = _tar(*(_file(f"r/{i}.yaml", CM.replace(b"one", f"n{i}".encode())) for i in range(6)))
    assert len(read_objects(layer, max_entries=6)) == 6
    with pytest.raises(LimitExceededError, match="more than 5 entries"):
        read_objects(layer, max_entries=5)


def test_a_gzip_bomb_stops_at_the_cap() -> None:
    layer = _tar(_file("big.yaml", CM + b"#" + b" " * 5_000_000 + b"\n"))
    assert len(layer) < 50_000
    with pytest.raises(LimitExceededError, match="inflates to more than 1000000 bytes"):
        read_objects(layer, max_bytes=1_000_000)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"kind: ConfigMap\nmetadata: {name: a}\n", "apiVersion: missing"),
        (b"apiVersion: v1\nmetadata: {name: a}\n", "kind: missing"),
        (b"apiVersion: v1\nkind: 3\nmetadata: {name: a}\n", "kind: missing or not a string"),
        (b"apiVersion: v1\nkind: ConfigMap\n", "metadata.name"),
        (b"- a\n- b\n", "not a Kubernetes object"),
    ],
)
def test_objects_without_identity_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        read_objects(_tar(_file("x.yaml", data)))


def test_a_release_with_no_objects_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="no Kubernetes object"):
        read_objects(_tar(_file("empty.yaml", b"---\n# nothing\n"), _file("notes.txt", b"hi")))
    with pytest.raises(InvalidInputError, match="no Kubernetes object"):
        read_objects(pack_resources([]))


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (b"PK\x03\x04", "not gzip"),
        (gzip.compress(bytes(range(256)) * 8)[:-30], "truncated|corrupt"),
        (gzip.compress(b"not a tar archive at all" * 40), "not a valid tar"),
    ],
)
def test_broken_layers_are_refused(layer: bytes, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        read_objects(layer)
