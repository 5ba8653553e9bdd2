"""Process settings: one ``Settings`` built in ``main()`` and passed down.

Every field can be set with ``FORGE_<GROUP>__<FIELD>`` (for example ``FORGE_DATABASE__URL``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from forge.domain.messages import DEFAULT_POOL, PoolName

__all__ = [
    "ApiSettings",
    "ArgoCDSettings",
    "AuthSettings",
    "BreakerSettings",
    "CiSettings",
    "ControllerSettings",
    "DatabaseSettings",
    "EngineSettings",
    "GitOpsSettings",
    "GitSettings",
    "GithubSettings",
    "KubeClientSettings",
    "MetricsSettings",
    "NatsSettings",
    "ObjectStoreSettings",
    "QuotaSettings",
    "RegistrySettings",
    "SecretsSettings",
    "Settings",
    "TimeoutSettings",
    "WorkerSettings",
]


DEFAULT_STEP_IMAGE = "ghcr.io/input-output-hk/catalyst-forge:0.1.0"
"""The one image of every process (images/Dockerfile), at this release: never a floating tag."""


class BreakerSettings(BaseModel):
    """A circuit breaker around one remote service (``forge.adapters._breakers``, docs/operations.md)."""

    threshold: int = Field(5, ge=1, description="Consecutive transient failures (each attempt) that open the breaker")
    reset_after: float = Field(
        30.0, gt=0, description="Seconds an open breaker fails fast before it lets one probe call through"
    )


class QuotaSettings(BaseModel):
    """Concurrency quotas (docs/operations.md). Steps in flight per worker process and job type are
    ``FORGE_WORKER__CONCURRENCY``."""

    runs_per_repository: int = Field(
        0,
        ge=0,
        description="Runs of one repository executing at once (a workflow submitted); further discovered runs "
        "wait, oldest first, until one ends; 0: no limit",
    )


class DatabaseSettings(BaseModel):
    url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/forge",
        description="PostgreSQL DSN (asyncpg syntax; a Unix socket directory may be given as ?host=/dir)",
    )
    pool_min: int = Field(1, ge=0, description="Connections the pool keeps open")
    pool_max: int = Field(10, ge=1, description="Upper bound of pooled connections")


class NatsSettings(BaseModel):
    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL (comma-separated for a cluster)")
    replicas: int = Field(1, ge=1, le=5, description="JetStream stream replicas (3 in a production cluster)")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for the first connection")
    user: str | None = Field(
        None, description="User to log in as when the server has authorization on (forge.jobs.nats_permissions)"
    )
    password: SecretStr | None = Field(None, description="Password of that user")


class ObjectStoreSettings(BaseModel):
    endpoint: str = Field("127.0.0.1:9000", description="S3 endpoint as host:port")
    access_key: str = Field("forge", description="S3 access key")
    secret_key: SecretStr = Field(SecretStr("forge-secret"), description="S3 secret key")
    bucket: str = Field("forge", description="Bucket holding run results and logs")
    secure: bool = Field(False, description="Use HTTPS to reach the endpoint")
    region: str = Field("us-east-1", description="S3 region used for request signing")


class GitLoginSettings(BaseModel):
    """How a process logs in to git remotes over HTTPS or SSH (``forge.adapters._git_remote_auth``)."""

    username: str | None = Field(
        None, description="User for an HTTPS remote that asks for one (unset, with a password: x-access-token)"
    )
    password: SecretStr | None = Field(
        None, description="Password or token for an HTTPS remote (Basic auth); unset: public remotes only"
    )
    ssh_user: str = Field("git", description="User for an SSH remote whose URL names none")
    ssh_key: SecretStr | None = Field(None, description="Private key (OpenSSH or PEM text) for an SSH remote")
    ssh_key_passphrase: SecretStr | None = Field(None, description="Passphrase of ssh_key, when it has one")
    ssh_known_hosts: Path | None = Field(
        None,
        description="known_hosts file (OpenSSH format: hashed names and [host]:port entries too) that must hold "
        "an SSH remote's host key; a host that is not in it, or presents another key, is refused before any "
        "credential is sent. Unset: $HOME/.ssh/known_hosts, and an SSH remote is refused when that does not exist",
    )


class GitSettings(GitLoginSettings):
    """The workers' source mirrors and how they log in to private repositories (one set per worker process, so
    per pool: docs/deploy.md "Worker pools")."""

    cache_dir: Path = Field(Path(".forge-dev/git-cache"), description="Where bare mirrors are kept")


class GitOpsSettings(GitLoginSettings):
    """The GitOps repository that deployments write ReleasePointers to (DESIGN §8, docs/gitops.md)."""

    url: str | None = Field(None, description="GitOps remote (URL or local path); unset: nothing is deployed")
    branch: str = Field("main", description="Branch Argo CD follows and pointers are committed to")
    author_name: str = Field("Catalyst Forge", description="Author and committer name of pointer commits")
    author_email: str = Field("forge@catalyst.invalid", description="Author and committer email of pointer commits")
    work_dir: Path = Field(Path(".forge-dev/gitops"), description="Where the local bare work copy of the remote lives")
    push_attempts: int = Field(
        5, ge=1, le=50, description="Pushes of one change before giving up while other writers keep moving the branch"
    )
    breaker: BreakerSettings = Field(
        default_factory=BreakerSettings, description="Circuit breaker around fetches and pushes to the remote"
    )
    argocd_namespace: str = Field("argocd", description="Namespace of the Argo CD Application objects written")
    argocd_repo_url: str | None = Field(
        None, description="The GitOps repository's URL as Argo CD reaches it (unset: url)"
    )
    destination_server: str = Field(
        "https://kubernetes.default.svc", description="Cluster API server Applications deploy to"
    )


class ApiSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address the API binds to")
    port: int = Field(8080, ge=0, le=65535, description="Port the API binds to")
    public_url: str = Field("http://127.0.0.1:8080", description="URL users and workers reach the API at")
    allow_local_clone_urls: bool = Field(
        False,
        description="Accept repositories whose clone URL is a local absolute path or a loopback, link-local or "
        "private address (the embedded platform, tests); never a path inside the platform's own directories",
    )
    rate_limit_runs: float = Field(
        120,
        ge=0,
        description="Runs one identity (token subject) may create per minute (POST /v1/runs, /v1/releases); "
        "a burst of as many is allowed; 0: no limit",
    )
    rate_limit_repository_runs: float = Field(
        300, ge=0, description="Runs created per minute for one repository through the API; 0: no limit"
    )
    rate_limit_webhooks: float = Field(
        300, ge=0, description="Signed webhook deliveries per minute for one repository; 0: no limit"
    )


class TimeoutSettings(BaseModel):
    """Default job deadlines in seconds per job type (DESIGN §6)."""

    discovery: float = Field(600, gt=0, description="Discovery job deadline")
    ci: float = Field(1800, gt=0, description="CI job deadline")
    artifact: float = Field(1200, gt=0, description="Artifact job deadline")
    release: float = Field(900, gt=0, description="Release job deadline")
    deploy: float = Field(600, gt=0, description="Deploy job deadline")


class WorkerSettings(BaseModel):
    concurrency: int = Field(2, ge=1, description="Jobs one worker process runs at once")
    ack_wait: float = Field(30.0, gt=0, description="Seconds JetStream waits for an ack or +WPI before redelivery")
    heartbeat: float = Field(10.0, gt=0, description="Seconds between in-progress acks of a running job")
    max_deliver: int = Field(3, ge=1, description="Deliveries before a job goes to the DLQ")
    fetch_wait: float = Field(1.0, gt=0, description="Seconds one pull request waits for a job")
    pool: PoolName = Field(
        DEFAULT_POOL,
        description="The worker pool this process serves (FORGE_WORKER__POOL): it consumes only the jobs of "
        "repositories registered in that pool (one pool per trust boundary, docs/security.md)",
    )


class CiSettings(BaseModel):
    """The CI worker: where steps run, where their secrets come from, how they are stopped."""

    work_dir: Path = Field(
        Path(".forge-dev/work"), description="Each CI job checks its commit out into <work_dir>/<job id>"
    )
    secrets_dir: Path | None = Field(
        None,
        description="Directory of secret files (<dir>/<NAME>, e.g. a mounted Kubernetes Secret); "
        "FORGE_SECRET_<NAME> environment variables are looked up first",
    )
    tree_cache: int = Field(
        8,
        ge=0,
        description="Commit trees kept in <work_dir>/trees for later steps of the same commit (least recently "
        "used first out; trees in use are never removed)",
    )
    kill_grace: float = Field(10.0, gt=0, description="Seconds between SIGTERM and SIGKILL of a timed-out step")
    log_interval: float = Field(1.0, gt=0, description="Seconds between uploads of a running step's log")
    log_limit: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Bytes of output one attempt of a step may log; beyond it the output is dropped after one "
        "marker line and the step keeps running (the worker holds at most this much per running step)",
    )
    started_event_after: float = Field(
        0.5,
        ge=0,
        description="Seconds a step runs before its 'started' event is published; a shorter step reports only "
        "its outcome",
    )
    earthly_flags: list[str] = Field(
        default_factory=lambda: ["--ci"], description="Flags put before the target of every earthly step"
    )
    sandbox: Literal["auto", "namespaces", "uid", "off"] = Field(
        "auto",
        description="How steps are isolated: namespaces (bubblewrap: own mount/PID/IPC namespaces, only the "
        "step's checkout writable), uid (a uid of its own per run; needs a root worker), off; auto takes the "
        "first that works here and says which at worker start",
    )
    sandbox_bwrap: str = Field("bwrap", description="The bubblewrap executable (a name on PATH, or a path)")
    sandbox_paths: list[Path] = Field(
        default_factory=lambda: [
            Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
        ],
        description="Host paths a sandboxed step sees, read-only (toolchains outside these must be added)",
    )
    sandbox_network: bool = Field(True, description="Whether sandboxed steps share the host's network")
    sandbox_uid_base: int = Field(
        1_000_000_000, ge=1000, le=2**31, description="First uid of the range a run's steps run as"
    )
    sandbox_uid_span: int = Field(
        1_000_000, ge=1, le=2**30, description="Size of that range (run id modulo span picks the uid)"
    )
    pass_env: list[str] = Field(
        default_factory=list,
        description="Worker environment variables handed to steps besides PATH, HOME and LANG "
        "(e.g. DOCKER_HOST, EARTHLY_BUILDKIT_HOST)",
    )


class EngineSettings(BaseModel):
    """Where workflows run: the embedded local engine, or an Argo Server."""

    kind: Literal["local", "argo"] = Field("local", description="local (one machine) or argo (Argo Server REST)")
    argo_url: str = Field("https://argo-server.argo:2746", description="Argo Server base URL (kind=argo)")
    argo_token: SecretStr | None = Field(None, description="Bearer token for the Argo Server (kind=argo)")
    verify_tls: bool = Field(True, description="Verify the Argo Server's TLS certificate")
    namespace: str = Field("forge", description="Namespace of WorkflowTemplates and Workflows")
    image: str = Field(
        DEFAULT_STEP_IMAGE, description="Image of the step container (pinned: the platform's own release)"
    )
    parallelism: int = Field(100, ge=1, description="Tasks of one workflow running at once")
    max_parallel: int = Field(8, ge=1, description="Containers the local engine runs at once on this machine")
    breaker: BreakerSettings = Field(
        default_factory=BreakerSettings, description="Circuit breaker around Argo Server requests (kind=argo)"
    )


class GithubSettings(BaseModel):
    """Commit statuses on GitHub (posted only when a token is set)."""

    api_url: str = Field("https://api.github.com", description="GitHub REST API base URL (GHES: https://host/api/v3)")
    token: SecretStr | None = Field(None, description="Token allowed to write commit statuses; unset: none are posted")
    context: str = Field("ci/catalyst-forge", description="The status context shown on commits")
    breaker: BreakerSettings = Field(
        default_factory=BreakerSettings, description="Circuit breaker around GitHub API requests"
    )


class RegistrySettings(BaseModel):
    """The OCI registry releases and artifacts are pushed to (DESIGN §8)."""

    url: str = Field(
        "http://127.0.0.1:5000", description="Registry base URL; the scheme decides TLS (http only on loopback/tests)"
    )
    username: str | None = Field(None, description="Registry user (unset: anonymous)")
    password: SecretStr | None = Field(None, description="Registry password or token")
    breaker: BreakerSettings = Field(
        default_factory=BreakerSettings, description="Circuit breaker around registry requests"
    )


class AuthSettings(BaseModel):
    """OIDC bearer tokens (DESIGN §7): the issuer that signs them and the roles they carry."""

    issuer: str | None = Field(
        None, description="OIDC issuer URL (discovery at <issuer>/.well-known/openid-configuration)"
    )
    audience: str = Field("forge", description="Audience (aud) every accepted token must name")
    roles_claim: str = Field("realm_access.roles", description="Dotted path of the roles list in a token's claims")
    client_id: str | None = Field(None, description="This process's client id (client credentials grant)")
    client_secret: SecretStr | None = Field(None, description="This process's client secret")
    github_actions: bool = Field(
        False,
        description="Also trust GitHub Actions' workflow tokens (issuer https://token.actions.githubusercontent.com); "
        "such a token may only create runs of its own repository claim",
    )
    github_actions_audience: str = Field(
        "forge", description="The aud a GitHub Actions token must name (the workflow's id-token audience)"
    )


class ControllerSettings(BaseModel):
    """Leader election of ``forge-controller`` on a ``coordination.k8s.io/v1`` Lease (off: one controller)."""

    leader_election: bool = Field(
        False, description="Run the reconcilers only while holding the Lease (needs a cluster; off when embedded)"
    )
    lease_name: str = Field("forge-controller", description="Name of the Lease the controllers compete for")
    lease_namespace: str | None = Field(
        None, description="Namespace of the Lease; unset: the pod's own namespace (service account), else forge"
    )
    identity: str | None = Field(None, description="This candidate's holder identity; unset: POD_NAME, else hostname")
    lease_duration: float = Field(15.0, gt=0, description="Seconds a Lease not renewed stays the holder's")
    renew_deadline: float = Field(10.0, gt=0, description="Seconds a leader may fail to renew before it steps down")
    retry_period: float = Field(2.0, gt=0, description="Seconds between attempts to acquire or renew the Lease")
    claim_lease: float = Field(
        30.0,
        gt=0,
        description="Seconds a run or deployment a controller claimed stays its own without renewal (renewed every"
        " third of it while worked on); then another controller takes it over",
    )


class KubeClientSettings(BaseModel):
    """How a process reaches the Kubernetes API: ``server`` (+ ``token``), else ``kubeconfig``, else the pod's
    own service account (in-cluster configuration)."""

    server: str | None = Field(
        None, description="Kubernetes API server URL (with token); unset: kubeconfig or in-cluster"
    )
    token: SecretStr | None = Field(None, description="Bearer token for server")
    ca_file: Path | None = Field(None, description="CA bundle that signed server's certificate (unset: system CAs)")
    verify_tls: bool = Field(True, description="Verify the API server's TLS certificate (server only)")
    kubeconfig: Path | None = Field(None, description="kubeconfig file (unset, with no server: in-cluster config)")
    context: str | None = Field(None, description="kubeconfig context (unset: its current context)")
    request_timeout: float = Field(10.0, gt=0, description="Seconds one Kubernetes API request may take")


class ArgoCDSettings(KubeClientSettings):
    """Argo CD Application health: a deployment is active once its Application is Synced and Healthy
    (docs/gitops.md). Disabled: active as soon as its pointer is committed (the embedded platform)."""

    enabled: bool = Field(False, description="Follow Argo CD Application health before a deployment is active")
    namespace: str = Field("argocd", description="Namespace of the Argo CD Application objects")
    timeout: float = Field(
        600.0, gt=0, description="Seconds after the pointer commit before a deployment not yet Synced and Healthy fails"
    )
    poll: float = Field(5.0, ge=0, description="Seconds between two reads of one Application")


class SecretsSettings(KubeClientSettings):
    """Where the platform's secrets (webhook secrets, steps' granted secrets) are read (docs/security.md)."""

    provider: Literal["env", "kubernetes"] = Field(
        "env",
        description="env: FORGE_SECRET_<NAME> variables, then ci.secrets_dir files; kubernetes: the keys of one Secret",
    )
    namespace: str = Field("forge", description="Namespace of the Secret (provider=kubernetes)")
    secret: str = Field("forge-secrets", description="Name of the Secret; each key is one secret (provider=kubernetes)")
    cache: float = Field(10.0, ge=0, description="Seconds one read of the Secret is reused (0: read on every lookup)")


class MetricsSettings(BaseModel):
    """Prometheus ``/metrics`` of the controller and the workers (the API serves ``GET /metrics`` on its own
    port). Traces and log format follow the environment alone (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``FORGE_LOG_FORMAT``; docs/operations.md)."""

    port: int = Field(
        0, ge=0, le=65535, description="Port of this process's /metrics endpoint; 0: none (the embedded platform)"
    )
    host: str = Field("127.0.0.1", description="Address the /metrics endpoint binds to (0.0.0.0 in a pod)")
    sample_interval: float = Field(
        15.0, gt=0, description="Seconds between two samples of JetStream lag, DLQ depth and active runs (controller)"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FORGE_", env_nested_delimiter="__", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    git: GitSettings = Field(default_factory=GitSettings)
    gitops: GitOpsSettings = Field(default_factory=GitOpsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    ci: CiSettings = Field(default_factory=CiSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    github: GithubSettings = Field(default_factory=GithubSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    argocd: ArgoCDSettings = Field(default_factory=ArgoCDSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
