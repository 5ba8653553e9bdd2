"""Validation against the bundled CRD JSON Schemas (``crds/``, copied unchanged; see its README).

jsonschema is imported and each schema compiled on first use, once per process: the Application
schema is 400 KB, and nothing that only reads pointers (the CMP) should pay for it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from forge.errors import InvalidInputError

if TYPE_CHECKING:
    import jsonschema

__all__ = ["check_crd"]

_FILES = {
    ("argoproj.io/v1alpha1", "Application"): "application_v1alpha1.json",
    ("apiextensions.crossplane.io/v1beta1", "EnvironmentConfig"): "environmentconfig_v1beta1.json",
}


def check_crd(obj: Mapping[str, Any], where: str) -> None:
    """``InvalidInputError`` listing every schema violation of ``obj`` (``where`` names the file)."""
    validator = _validator(str(obj.get("apiVersion")), str(obj.get("kind")))
    problems = sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(obj)
    )
    if problems:
        raise InvalidInputError(f"{where}: {'; '.join(problems)}", details={"problems": problems})


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    import jsonschema

    name = _FILES.get((api_version, kind))
    if name is None:
        raise InvalidInputError(f"no bundled schema for {kind} {api_version}")
    schema = json.loads(resources.files("forge.gitops").joinpath("crds", name).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)
