from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.errors import InvalidInputError, LimitExceededError
from forge.releases import pack_resources, unpack_resources


def obj(kind: str, name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata, **extra}


OBJECTS = [
    obj("Service", "api", "shop", spec={"ports": [{"port": 80}]}),
    obj("ConfigMap", "settings", data={"flag": "yes", "version": "1.10", "replicas": "${{ env.replicas }}"}),
    obj("ConfigMap", "Odd Name/With:Chars", "shop"),
]


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getmembers()


def reversed_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: reversed_keys(v) for k, v in reversed(list(node.items()))}
    if isinstance(node, list):
        return [reversed_keys(v) for v in node]
    return node


def test_pack_is_deterministic_across_calls_orders_and_key_orders() -> None:
    first = pack_resources(OBJECTS)
    assert pack_resources(OBJECTS) == first
    assert pack_resources(list(reversed(OBJECTS))) == first
    assert pack_resources([reversed_keys(o) for o in OBJECTS]) == first


def test_pack_layout_is_normalised() -> None:
    data = pack_resources(OBJECTS)
    assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip: mtime 0, no name, OS unknown
    entries = members(data)
    assert [m.name for m in entries] == [
        "resources/configmap-settings.yaml",
        "resources/configmap-shop-odd-name-with-chars.yaml",
        "resources/service-shop-api.yaml",
    ]
    for m in entries:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)


def test_entries_are_json_documents_that_read_back_equal() -> None:
    data = pack_resources(OBJECTS)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        handle = tar.extractfile("resources/configmap-settings.yaml")
        assert handle is not None
        text = handle.read().decode()
    assert text.startswith('{\n  "apiVersion": "v1",\n  "data": {\n    "flag": "yes",')
    assert json.loads(text) == OBJECTS[1]
    assert unpack_resources(data) == sorted(OBJECTS, key=lambda o: (o["kind"], o["metadata"]["name"]))


def test_clashing_file_names_get_numbered() -> None:
    clash = [obj("ConfigMap", "a b"), obj("ConfigMap", "a/b"), obj("ConfigMap", "A:B")]
    names = [m.name for m in members(pack_resources(clash))]
    assert names == ["resources/configmap-a-b-2.yaml", "resources/configmap-a-b-3.yaml", "resources/configmap-a-b.yaml"]
    assert len(unpack_resources(pack_resources(clash))) == 3


def test_unpack_sorts_by_kind_then_name() -> None:
    objects = [obj("Service", "b"), obj("Service", "a"), obj("ConfigMap", "z"), obj("Deployment", "m")]
    result = unpack_resources(pack_resources(objects))
    assert [(o["kind"], o["metadata"]["name"]) for o in result] == [
        ("ConfigMap", "z"),
        ("Deployment", "m"),
        ("Service", "a"),
        ("Service", "b"),
    ]


def test_an_empty_pack_unpacks_to_nothing() -> None:
    assert unpack_resources(pack_resources([])) == []


_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)


@given(st.lists(st.tuples(st.sampled_from(["ConfigMap", "Secret", "Service"]), _names, _names), max_size=6))
def test_pack_round_trips_any_names(identities: list[tuple[str, str, str]]) -> None:
    objects = [obj(kind, name, namespace, data={"k": name}) for kind, name, namespace in identities]
    data = pack_resources(objects)
    assert pack_resources(list(reversed(objects))) == data
    key = lambda o: json.dumps(o, sort_keys=True)  # noqa: E731
    assert sorted(unpack_resources(data), key=key) == sorted(objects, key=key)


# Hostile archives: each one is refused with its one-line cause.


def tar_gz(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in entries:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return gzip.compress(buffer.getvalue(), mtime=0)


def regular(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


GOOD = json.dumps(obj("ConfigMap", "ok")).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tar_gz(regular("/etc/passwd", GOOD)), "resources layer: entry '/etc/passwd': absolute path"),
        (
            tar_gz(regular("resources/../../x.yaml", GOOD)),
            "resources layer: entry 'resources/../../x.yaml': path contains '..'",
        ),
        (
            tar_gz(special("resources/a.yaml", tarfile.SYMTYPE, "/etc/passwd")),
            "resources layer: entry 'resources/a.yaml': is a symbolic link; only regular files are allowed",
        ),
        (
            tar_gz(regular("resources/a.yaml", GOOD), special("resources/b.yaml", tarfile.LNKTYPE, "resources/a.yaml")),
            "resources layer: entry 'resources/b.yaml': is a hard link; only regular files are allowed",
        ),
        (
            tar_gz(special("resources/null.yaml", tarfile.CHRTYPE)),
            "resources layer: entry 'resources/null.yaml': is a device; only regular files are allowed",
        ),
        (
            tar_gz(special("resources/sda.yaml", tarfile.BLKTYPE)),
            "resources layer: entry 'resources/sda.yaml': is a device; only regular files are allowed",
        ),
        (
            tar_gz(special("resources/pipe.yaml", tarfile.FIFOTYPE)),
            "resources layer: entry 'resources/pipe.yaml': is a FIFO; only regular files are allowed",
        ),
        (
            tar_gz(special("resources", tarfile.DIRTYPE)),
            "resources layer: entry 'resources': is a directory; only regular files are allowed",
        ),
        (
            tar_gz(regular("other/a.yaml", GOOD)),
            "resources layer: entry 'other/a.yaml': entries are resources/<name>.yaml with [a-z0-9._-] names",
        ),
        (
            tar_gz(regular("resources/a.yaml", GOOD), regular("resources/a.yaml", GOOD)),
            "resources layer: entry 'resources/a.yaml': appears twice",
        ),
        (
            tar_gz(regular("resources/a.yaml", b"- a\n- b\n")),
            "resources layer: entry 'resources/a.yaml': not one JSON object: Expecting value (line 1)",
        ),
        (
            tar_gz(regular("resources/a.yaml", b"[1, 2]")),
            "resources layer: entry 'resources/a.yaml': must hold one mapping, got list",
        ),
        (
            tar_gz(regular("resources/a.yaml", GOOD + b"\n" + GOOD)),
            "resources layer: entry 'resources/a.yaml': not one JSON object: Extra data (line 2)",
        ),
        (
            tar_gz(regular("resources/a.yaml", b'{"kind": "ConfigMap", "metadata": {"name": "x"}}')),
            "resources layer: entry 'resources/a.yaml': apiVersion: missing or not a string",
        ),
        (
            tar_gz(regular("resources/a.yaml", b'{"apiVersion": "v1", "kind": "ConfigMap"}')),
            "resources layer: entry 'resources/a.yaml': metadata.name: missing or not a string",
        ),
        (
            tar_gz(regular("resources/a.yaml", b'{"apiVersion": "v1", "apiVersion": "v2"}')),
            "resources layer: entry 'resources/a.yaml': duplicate key 'apiVersion'",
        ),
        (
            tar_gz(regular("resources/a.yaml", b'{"apiVersion": NaN}')),
            "resources layer: entry 'resources/a.yaml': NaN is not allowed",
        ),
        (
            tar_gz(regular("resources/a.yaml", b"\xff\xfe")),
            "resources layer: entry 'resources/a.yaml': not UTF-8 text: invalid start byte at byte 0",
        ),
        (
            tar_gz(regular("resources/a.yaml", b'{"a":' * 70 + b"1" + b"}" * 70)),
            "resources layer: entry 'resources/a.yaml': nests deeper than 64 levels",
        ),
        (b"PK\x03\x04 not gzip", "resources layer: not gzip data"),
        (pack_resources([obj("ConfigMap", "a")])[:-12], "resources layer: truncated gzip stream"),
        (pack_resources([obj("ConfigMap", "a")]) * 2, "resources layer: data after the end of the gzip stream"),
        (gzip.compress(b"not a tar archive" * 40, mtime=0), "resources layer: not a valid tar archive: invalid header"),
    ],
)
def test_unpack_refuses_hostile_archives(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        unpack_resources(data)
    assert str(caught.value) == message
    assert not isinstance(caught.value, LimitExceededError)


def test_unpack_refuses_an_oversized_entry() -> None:
    big = json.dumps(obj("ConfigMap", "big", data={"x": "y" * 5000})).encode()
    data = tar_gz(regular("resources/big.yaml", big))
    assert len(unpack_resources(data)) == 1
    with pytest.raises(LimitExceededError) as caught:
        unpack_resources(data, max_entry_bytes=4096)
    assert str(caught.value) == f"resources layer: entry 'resources/big.yaml': {len(big)} bytes, over the limit of 4096"


def test_unpack_stops_a_gzip_bomb_at_the_cap() -> None:
    # 64 MiB of zeros compress to about 64 KB (the ratio of a bomb); reading stops after max_bytes + 1
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 70_000
    with pytest.raises(LimitExceededError) as caught:
        unpack_resources(bomb, max_bytes=1024 * 1024)
    assert str(caught.value) == "resources layer: decompresses to more than 1048576 bytes"


def test_unpack_refuses_too_many_entries() -> None:
    data = pack_resources([obj("ConfigMap", f"c{i}") for i in range(6)])
    assert len(unpack_resources(data, max_entries=6)) == 6
    with pytest.raises(LimitExceededError) as caught:
        unpack_resources(data, max_entries=5)
    assert str(caught.value) == "resources layer: more than 5 entries"


def test_unpack_refuses_an_oversized_layer_before_reading_it() -> None:
    data = pack_resources(OBJECTS)
    with pytest.raises(LimitExceededError) as caught:
        unpack_resources(data, max_compressed=len(data) - 1)
    assert str(caught.value) == f"resources layer: {len(data)} bytes compressed, over the limit of {len(data) - 1}"


def test_pack_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(InvalidInputError) as caught:
        pack_resources([obj("ConfigMap", "nan", data={"x": float("nan")})])
    assert str(caught.value) == (
        "resources layer: an object is not representable as JSON: Out of range float values are not JSON compliant: nan"
    )


_VALID = pack_resources(OBJECTS)


@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_unpack_of_corrupted_bytes_returns_objects_or_a_typed_error(flips: list[tuple[int, int]]) -> None:
    corrupted = bytearray(_VALID)
    for position, value in flips:
        corrupted[position] = value
    message = ""
    try:
        result = unpack_resources(bytes(corrupted))
    except (InvalidInputError, LimitExceededError) as exc:
        message = str(exc)
    else:
        assert all(isinstance(o, dict) and isinstance(o["kind"], str) for o in result)
    assert "\n" not in message


@given(st.binary(max_size=512))
def test_unpack_of_arbitrary_bytes_is_a_typed_error(data: bytes) -> None:
    with pytest.raises((InvalidInputError, LimitExceededError)):
        unpack_resources(gzip.compress(data, mtime=0) if data[:1] == b"z" else data)
