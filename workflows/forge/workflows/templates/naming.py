"""Argo and Kubernetes names: DAG task names and label values, readable with a hash when needed.

- DAG task and template names: Argo's ``workflowFieldNameFmt`` ``^[a-zA-Z0-9][-a-zA-Z0-9]*$``, at
  most 128 characters, and no leading digit when ``depends`` is used. We keep them to 63 (a DNS
  label) so they stay readable in the UI and in ``kubectl``: ``<phase>-<project>-<step>``, or its
  first 54 characters plus ``-`` and 8 hex digits of the SHA-256 of ``phase/project/step`` when
  longer or when two triples would share a name (``a-b``/``c`` vs ``a``/``b-c``).
- Label values: at most 63 characters of ``[A-Za-z0-9._-]``, starting and ending alphanumeric;
  anything else is sanitised and suffixed with a hash so distinct inputs keep distinct values.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["MAX_TASK_NAME", "TASK_NAME", "label_value", "task_names"]

MAX_TASK_NAME = 63
TASK_NAME = re.compile(r"^[a-zA-Z][-a-zA-Z0-9]*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_HASH_LEN = 8

Triple = tuple[str, str, str]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def _hashed(base: str, key: str, limit: int) -> str:
    head = base[: limit - _HASH_LEN - 1].rstrip("-_.")
    return f"{head}-{_digest(key)}" if head else _digest(key)


def task_names(triples: Iterable[Triple]) -> dict[Triple, str]:
    """A unique, valid DAG task name for every ``(phase, project, step)``."""
    wanted = list(dict.fromkeys(triples))
    base = {t: "-".join(t) for t in wanted}
    counts = Counter(base.values())
    names: dict[Triple, str] = {}
    for triple in wanted:
        name = base[triple]
        if len(name) > MAX_TASK_NAME or counts[name] > 1:
            name = _hashed(name, "/".join(triple), MAX_TASK_NAME)
        if not TASK_NAME.match(name):
            raise ValueError(f"cannot make an Argo task name of {triple!r}: got {name!r}")
        names[triple] = name
    if len(set(names.values())) != len(names):  # a hash collision between distinct triples
        raise ValueError("task names are not unique")
    return names


def label_value(text: str) -> str:
    """``text`` when it is a valid label value, else a sanitised form with a hash of ``text``."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    clean = re.sub(r"[^A-Za-z0-9._-]+", ".", text).strip("-_.")
    return _hashed(clean, text, 63)
