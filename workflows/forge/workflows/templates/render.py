"""YAML text of a generated template: block style, keys in the order hera emits, no line folding."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

__all__ = ["to_yaml"]


def to_yaml(doc: Mapping[str, Any]) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 1 << 20  # a payload stays on one line, so golden diffs show what changed
    yaml.allow_unicode = True
    buffer = io.StringIO()
    yaml.dump(dict(doc), buffer)
    return buffer.getvalue()
