"""ReleasePointer and EnvironmentConfig documents: byte-exact rendering, round trips, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.embedded.gitops import SEED_ENVIRONMENTS, SEED_VALUES
from forge.errors import InvalidInputError, LimitExceededError
from forge.gitops.layout import AppLocation
from forge.gitops.models import EnvironmentValues, ReleasePointer, parse_document

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

POINTER_YAML = f"""\
apiVersion: forge.projectcatalyst.io/v1alpha1
kind: ReleasePointer
metadata:
  name: api
  annotations:
    forge.projectcatalyst.io/release-number: '12'
    forge.projectcatalyst.io/deployed-by: alice@example.com
    forge.projectcatalyst.io/deployed-at: '2025-03-04T05:06:07Z'
spec:
  repository: Acme/shop
  project: api
  release: {COMMIT}
  digest: {DIGEST}
"""


_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n" for prev, name in zip("abcde", "bcdef", strict=True)
)


def _pointer(**overrides: object) -> ReleasePointer:
    fields: dict[str, object] = {
        "repository": "Acme/shop",
        "project": "api",
        "release_number": 12,
        "commit": COMMIT,
        "digest": DIGEST,
        "deployed_by": "alice@example.com",
        "deployed_at": AT,
    }
    fields.update(overrides)
    return ReleasePointer.build(**fields)  # type: ignore[arg-type]


def test_pointer_renders_byte_exact() -> None:
    assert _pointer().to_yaml() == POINTER_YAML.encode()


def test_pointer_round_trips_and_exposes_its_annotations() -> None:
    pointer = parse_document(POINTER_YAML.encode(), ReleasePointer, "dev/apps/acme/shop/api/release.yaml")
    assert pointer == _pointer()
    assert pointer.release_number == 12
    assert pointer.deployed_by == "alice@example.com"
    assert pointer.deployed_at == AT
    assert pointer.spec.digest == DIGEST


def test_deployed_at_is_written_in_utc() -> None:
    later = AT.astimezone(timezone(timedelta(hours=2)))
    assert _pointer(deployed_at=later).to_yaml() == POINTER_YAML.encode()
    with pytest.raises(InvalidInputError, match="aware"):
        _pointer(deployed_at=datetime(2025, 1, 1))  # noqa: DTZ001 - the naive datetime is the point


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"commit": "abc123"}, "spec.release"),
        ({"commit": COMMIT.upper()}, "spec.release"),
        ({"digest": "sha256:" + "ab" * 31}, "spec.digest"),
        ({"digest": "sha512:" + "ab" * 32}, "spec.digest"),
        ({"digest": "ab" * 32}, "spec.digest"),
        ({"release_number": 0}, "release number"),
        ({"project": "Api"}, "project"),
        ({"repository": "acme"}, "repository"),
        ({"deployed_by": ""}, "deployed-by"),
    ],
)
def test_pointer_fields_are_validated(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _pointer(**overrides)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (POINTER_YAML.replace("kind: ReleasePointer", "kind: Deployment"), ":2: kind: "),
        (POINTER_YAML.replace("  name: api\n", "  name: web\n"), "metadata.name 'web' differs from spec.project"),
        (POINTER_YAML.replace(f"release: {COMMIT}", "release: main"), ":12: spec.release: "),
        (POINTER_YAML.replace(f"digest: {DIGEST}", "digest: sha256:1"), ":13: spec.digest: "),
        (POINTER_YAML + "status: {}\n", "status: Extra inputs are not permitted"),
        ("- a list\n", "must be a mapping"),
        (_BOMB, "expands to more than"),
    ],
)
def test_a_bad_pointer_file_is_refused_naming_file_line_and_field(text: str, reason: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_document(text.encode(), ReleasePointer, "dev/apps/acme/shop/api/release.yaml")
    assert str(info.value).startswith("dev/apps/acme/shop/api/release.yaml")
    assert reason in str(info.value)


def test_an_oversized_file_is_refused_before_parsing() -> None:
    with pytest.raises(LimitExceededError, match=r"release\.yaml"):
        parse_document(b"a: " + b"x" * 300_000, ReleasePointer, "release.yaml")


def test_project_values_render_byte_exact() -> None:
    values = EnvironmentValues.for_project(
        AppLocation("staging", "acme/shop", "api"),
        {
            "replicas": 2,
            "image": {"pullPolicy": "Always"},
            "hosts": ["a.example", "b.example"],
            "debug": None,
            "tls": False,
            "greeting": "gr\u00fc\u00df dich",
        },
    )
    assert values.to_yaml() == (
        b"apiVersion: apiextensions.crossplane.io/v1beta1\n"
        b"kind: EnvironmentConfig\n"
        b"metadata:\n"
        b"  name: staging-acme-shop-api\n"
        b"  labels:\n"
        b"    forge.projectcatalyst.io/environment: staging\n"
        b"    forge.projectcatalyst.io/project: api\n"
        b"data:\n"
        b"  replicas: 2\n"
        b"  image:\n"
        b"    pullPolicy: Always\n"
        b"  hosts:\n"
        b"  - a.example\n"
        b"  - b.example\n"
        b"  debug: null\n"
        b"  tls: false\n"
        b'  greeting: "gr\\xFC\\xDF dich"\n'
    )
    assert parse_document(values.to_yaml(), EnvironmentValues, "staging/apps/acme/shop/api/env.yaml") == values


def test_the_embedded_seed_is_what_the_model_renders() -> None:
    assert list(SEED_ENVIRONMENTS) == ["dev", "staging", "production"]
    for environment, text in SEED_ENVIRONMENTS.items():
        rendered = EnvironmentValues.for_environment(environment, SEED_VALUES[environment]).to_yaml()
        assert rendered == text.encode(), environment
        parsed = parse_document(rendered, EnvironmentValues, f"{environment}/env.yaml")
        assert parsed.data["replicas"] == SEED_VALUES[environment]["replicas"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x": float("nan")}, "data.x: nan is not a JSON number"),
        ({"x": {1: "a"}}, "keys must be strings"),
        ({"x": [b"bytes"]}, r"data.x\[0\]: bytes is not a JSON value"),
    ],
)
def test_values_must_be_json(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        EnvironmentValues.for_environment("dev", data)


def test_an_environment_config_with_another_kind_is_refused() -> None:
    text = SEED_ENVIRONMENTS["dev"].replace("kind: EnvironmentConfig", "kind: ConfigMap")
    with pytest.raises(InvalidInputError, match=r"dev/env\.yaml:2: kind"):
        parse_document(text.encode(), EnvironmentValues, "dev/env.yaml")


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(min_size=1, max_size=12), _json, max_size=6))
def test_any_json_values_round_trip_through_the_canonical_yaml(data: dict[str, object]) -> None:
    values = EnvironmentValues.for_environment("dev", data)
    rendered = values.to_yaml()
    parsed = parse_document(rendered, EnvironmentValues, "dev/env.yaml")
    assert parsed.data == data
    assert parsed.to_yaml() == rendered
