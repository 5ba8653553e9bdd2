"""Contracts (``typing.Protocol``) between the platform and the technologies behind it."""

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use (PEP 562): a process that needs one contract (forge-cmp: the registry's) does not
# import every other one's models.
_EXPORTS = {
    "ArtifactReader": "forge.ports.registry",
    "ArtifactRegistry": "forge.ports.registry",
    "BusMessage": "forge.ports.bus",
    "Database": "forge.ports.store",
    "DeployerStatus": "forge.ports.deployer",
    "EntryKind": "forge.ports.git",
    "ExecutionStore": "forge.ports.store",
    "GitMirrors": "forge.ports.git",
    "GitReader": "forge.ports.git",
    "Identity": "forge.ports.others",
    "IdentityProvider": "forge.ports.others",
    "Layer": "forge.ports.registry",
    "Manifest": "forge.ports.registry",
    "MessageBus": "forge.ports.bus",
    "NewRepository": "forge.ports.store",
    "NewRun": "forge.ports.store",
    "NodePhase": "forge.ports.engine",
    "NodeStatus": "forge.ports.engine",
    "ObjectInfo": "forge.ports.objects",
    "ObjectStore": "forge.ports.objects",
    "Page": "forge.ports.store",
    "RepositoryStore": "forge.ports.store",
    "RunFilter": "forge.ports.store",
    "RunStore": "forge.ports.store",
    "SecretProvider": "forge.ports.others",
    "SourceHost": "forge.ports.others",
    "Subscription": "forge.ports.bus",
    "TreeEntry": "forge.ports.git",
    "WorkflowEngine": "forge.ports.engine",
    "WorkflowPhase": "forge.ports.engine",
    "WorkflowStatus": "forge.ports.engine",
}

if TYPE_CHECKING:
    from forge.ports.bus import BusMessage, MessageBus, Subscription
    from forge.ports.deployer import DeployerStatus
    from forge.ports.engine import NodePhase, NodeStatus, WorkflowEngine, WorkflowPhase, WorkflowStatus
    from forge.ports.git import EntryKind, GitMirrors, GitReader, TreeEntry
    from forge.ports.objects import ObjectInfo, ObjectStore
    from forge.ports.others import Identity, IdentityProvider, SecretProvider, SourceHost
    from forge.ports.registry import ArtifactReader, ArtifactRegistry, Layer, Manifest
    from forge.ports.store import (
        Database,
        ExecutionStore,
        NewRepository,
        NewRun,
        Page,
        RepositoryStore,
        RunFilter,
        RunStore,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'forge.ports' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ArtifactReader",
    "ArtifactRegistry",
    "BusMessage",
    "Database",
    "DeployerStatus",
    "EntryKind",
    "ExecutionStore",
    "GitMirrors",
    "GitReader",
    "Identity",
    "IdentityProvider",
    "Layer",
    "Manifest",
    "MessageBus",
    "NewRepository",
    "NewRun",
    "NodePhase",
    "NodeStatus",
    "ObjectInfo",
    "ObjectStore",
    "Page",
    "RepositoryStore",
    "RunFilter",
    "RunStore",
    "SecretProvider",
    "SourceHost",
    "Subscription",
    "TreeEntry",
    "WorkflowEngine",
    "WorkflowPhase",
    "WorkflowStatus",
]
