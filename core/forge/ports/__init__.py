"""Contracts (``typing.Protocol``) between the platform and the technologies behind it."""

from forge.ports.bus import BusMessage, MessageBus, Subscription
from forge.ports.deployer import DeployerStatus
from forge.ports.engine import NodePhase, NodeStatus, WorkflowEngine, WorkflowPhase, WorkflowStatus
from forge.ports.git import EntryKind, GitMirrors, GitReader, TreeEntry
from forge.ports.objects import ObjectInfo, ObjectStore
from forge.ports.others import Identity, IdentityProvider, SecretProvider, SourceHost
from forge.ports.registry import ArtifactRegistry, Layer, Manifest
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

__all__ = [
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
