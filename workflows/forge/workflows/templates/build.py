"""Build the Argo WorkflowTemplate ``forge-run-<run id>`` of one run with Hera (DESIGN §1, §3.7).

Encoding choices (the local engine runs this very template, so it implements the same subset):

- **Phase groups in sequence: one DAG template per group.** The entrypoint DAG ``main`` has one
  task per group (``group-<n>``), each depending on the previous one; the task runs the DAG
  template ``group-<n>`` holding that group's step tasks. This costs one edge per group, where a
  flat DAG would need every head task of group N+1 to depend on every tail task of group N
  (200 x 200 names for 200 projects: ~1 MB of ``depends`` text, past etcd's object limit) or a
  fake barrier container. Argo's default dependency semantics apply at both levels, and every
  DAG but the release phase's sets ``failFast: true``: a failed step stops its dependents, no new
  task starts, and the group (hence the run) fails, so later groups never run. The release phase
  (the last group) lets each project's release finish when another's fails.
- **Steps, ``depends_on``**: see :mod:`forge.workflows.templates.plan`; edges are ``depends``
  expressions (``a && b``).
- **Timeouts and retries are template-level in Argo** (``DAGTask`` has neither field; its
  ``inline`` template would copy the container into every task), so there is one container
  template per distinct ``(timeout, retries)`` pair, ``forge-step-t<seconds>-r<retries>``, all
  with the same command. ``activeDeadlineSeconds`` is the step timeout plus a 60 s grace, so the
  dispatcher's own ``--timeout`` fires first and reports a clean failure; Argo's deadline is the
  backstop. ``retries > 0`` gives ``retryStrategy{limit: retries, retryPolicy: Always,
  backoff: 10s, factor 2, capped at 1m}``: a failed job and a lost pod both count as a failed attempt.
- **Labels**: the WorkflowTemplate and the Workflows made from it (``workflowMetadata``) carry
  ``forge.projectcatalyst.io/{run-id,repository,commit}`` (label-safe values) and annotations with
  the raw repository, commit and branch; every pod gets ``run-id`` (``podMetadata``) and, from the
  container template's ``metadata.labels`` filled with its input parameters, ``phase``,
  ``project`` and ``step`` (DAG tasks have no metadata of their own).
- **NATS**: ``FORGE_NATS__URL`` and ``FORGE_NATS__USER`` come from the ``nats-url`` and ``nats-user`` keys of
  the ConfigMap ``spec.nats_config_map`` (cluster configuration, not per-run data), ``FORGE_NATS__PASSWORD``
  from the Secret ``spec.nats_secret``: the step dispatcher's own NATS user (forge.jobs.nats_permissions).
- The run's identity (``run-id``, ``repository``, ``commit``, ``branch``) and its repository's worker
  ``pool`` are in ``spec.arguments.parameters``; the command reads them as ``{{workflow.parameters.*}}``,
  so every job of the run is published on ``<type prefix>.<pool>.…`` and only that pool's workers run it.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import DAG, ConfigMapEnv, Container, Parameter, RetryStrategy, SecretEnv, Task, WorkflowTemplate
from hera.workflows import models as m

from forge.domain.config import RELEASE_PHASE
from forge.errors import InvalidInputError
from forge.workflows.templates.naming import label_value
from forge.workflows.templates.payload import (
    artifact_key,
    artifact_payload,
    ci_key,
    ci_payload,
    release_key,
    release_payload,
)
from forge.workflows.templates.plan import PlannedGroup, PlannedTask, has_work, plan_tasks
from forge.workflows.templates.spec import LABEL_PREFIX, NATS_PASSWORD_KEY, NATS_URL_KEY, NATS_USER_KEY, TemplateSpec

__all__ = ["DEADLINE_GRACE_SECONDS", "STEP_COMMAND", "build_template", "step_template_name", "workflow_name"]

DEADLINE_GRACE_SECONDS = 60
_INPUTS = ("job-type", "key", "payload", "timeout", "phase", "project", "step")
STEP_COMMAND = [
    "forge-step",
    "dispatch",
    "--job-type",
    "{{inputs.parameters.job-type}}",
    "--key",
    "{{inputs.parameters.key}}",
    "--run-id",
    "{{workflow.parameters.run-id}}",
    "--repository",
    "{{workflow.parameters.repository}}",
    "--commit",
    "{{workflow.parameters.commit}}",
    "--pool",
    "{{workflow.parameters.pool}}",
    "--payload",
    "{{inputs.parameters.payload}}",
    "--timeout",
    "{{inputs.parameters.timeout}}",
]


def workflow_name(spec: TemplateSpec) -> str:
    return f"forge-run-{spec.run_id}"


def step_template_name(timeout_seconds: int, retries: int) -> str:
    return f"forge-step-t{timeout_seconds}-r{retries}"


def build_template(spec: TemplateSpec) -> dict[str, Any]:
    """The WorkflowTemplate as a dict (a pure function of ``spec``).

    Raises ``InvalidInputError`` when no affected project has a step (check :func:`has_work`
    first: such a run succeeds without a workflow, since Argo rejects a DAG without tasks), when a
    step id is missing, or when ``depends_on`` forms a cycle.
    """
    if not has_work(spec.discovery):
        raise InvalidInputError(f"run {spec.run_id} has no steps to run; it needs no workflow")
    groups = plan_tasks(spec.discovery)
    missing = sorted({t.key for g in groups for t in g.tasks} - set(spec.step_ids))
    if missing:
        listed = ", ".join("/".join(k) for k in missing[:5])
        raise InvalidInputError(f"no step execution id for {len(missing)} step(s): {listed}")
    containers = {
        (t.step.timeout_seconds, t.step.retries): _step_container(spec, t.step.timeout_seconds, t.step.retries)
        for g in groups
        for t in g.tasks
    }
    dags = [_group_dag(spec, group, containers) for group in groups]
    names = [f"group-{group.group}" for group in groups]
    main = DAG(
        name="main",
        fail_fast=True,
        tasks=[Task(name=name, template=name, depends=names[i - 1] if i else None) for i, name in enumerate(names)],
    )
    labels = _run_labels(spec)
    annotations = {
        f"{LABEL_PREFIX}/repository": spec.repository,
        f"{LABEL_PREFIX}/commit": spec.commit_sha,
        f"{LABEL_PREFIX}/branch": spec.branch or "",
    }
    template = WorkflowTemplate(
        name=workflow_name(spec),
        namespace=spec.namespace,
        labels=labels,
        annotations=annotations,
        entrypoint="main",
        arguments=[
            Parameter(name="run-id", value=str(spec.run_id)),
            Parameter(name="repository", value=spec.repository),
            Parameter(name="commit", value=spec.commit_sha),
            Parameter(name="branch", value=spec.branch or ""),
            Parameter(name="pool", value=spec.pool),
        ],
        active_deadline_seconds=spec.active_deadline_seconds,
        parallelism=spec.parallelism,
        pod_gc=m.PodGC(strategy="OnPodCompletion"),
        ttl_strategy=m.TTLStrategy(seconds_after_completion=spec.ttl_seconds_after_completion),
        workflow_metadata=m.WorkflowMetadata(labels=labels, annotations=annotations),
        pod_metadata=m.Metadata(labels={f"{LABEL_PREFIX}/run-id": str(spec.run_id)}),
        service_account_name=spec.service_account,
        templates=[main, *dags, *(containers[k] for k in sorted(containers))],
    )
    doc: dict[str, Any] = template.to_dict()
    return doc


def _run_labels(spec: TemplateSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "catalyst-forge",
        f"{LABEL_PREFIX}/run-id": str(spec.run_id),
        f"{LABEL_PREFIX}/repository": label_value(spec.repository),
        f"{LABEL_PREFIX}/commit": label_value(spec.commit_sha),
    }


def _group_dag(spec: TemplateSpec, group: PlannedGroup, containers: dict[tuple[int, int], Container]) -> DAG:
    # The release phase is not fail-fast across projects: one project's failed release leaves the
    # others' to finish (the run still fails).
    releasing = all(task.step.phase == RELEASE_PHASE for task in group.tasks)
    return DAG(
        name=f"group-{group.group}",
        fail_fast=not releasing,
        tasks=[_task(spec, task, containers) for task in group.tasks],
    )


def _task(spec: TemplateSpec, task: PlannedTask, containers: dict[tuple[int, int], Container]) -> Task:
    step = task.step
    job_type, key, payload = _job(spec, task)
    return Task(
        name=task.name,
        template=containers[(step.timeout_seconds, step.retries)],
        depends=" && ".join(task.depends) or None,
        arguments={
            "job-type": job_type,
            "key": key,
            "payload": payload,
            "timeout": str(step.timeout_seconds),
            "phase": step.phase,
            "project": task.project.name,
            "step": step.name,
        },
    )


def _job(spec: TemplateSpec, task: PlannedTask) -> tuple[str, str, str]:
    """The job type, key and payload of a task: a CI step, or the release phase's artifact and release steps."""
    step, project, step_id = task.step, task.project, spec.step_ids[task.key]
    if step.action == "artifact":
        return (
            "artifact",
            artifact_key(spec.run_id, project.name, step.target),
            artifact_payload(project, step, spec.clone_url, step_id, spec.granted_secrets),
        )
    if step.action == "release":
        intent = next((r for r in spec.discovery.releases if r.project == project.name), None)
        if intent is None:
            raise InvalidInputError(f"project {project.name} has a release step but no release intent")
        payload = release_payload(
            spec.run_id,
            project,
            step,
            intent,
            clone_url=spec.clone_url,
            requested_by=spec.triggered_by,
            step_execution_id=step_id,
        )
        return "release", release_key(spec.run_id, project.name), payload
    payload = ci_payload(project, step, spec.clone_url, step_id, spec.granted_secrets)
    return "ci", ci_key(spec.run_id, step, project.name), payload


def _step_container(spec: TemplateSpec, timeout_seconds: int, retries: int) -> Container:
    retry = None
    if retries > 0:
        backoff = m.Backoff(duration="10s", factor=m.IntOrString(2), cap="1m")
        retry = RetryStrategy(limit=retries, retry_policy="Always", backoff=backoff)
    return Container(
        name=step_template_name(timeout_seconds, retries),
        image=spec.image,
        command=list(STEP_COMMAND),
        inputs=[Parameter(name=name) for name in _INPUTS],
        env=[
            ConfigMapEnv(name="FORGE_NATS__URL", config_map_name=spec.nats_config_map, config_map_key=NATS_URL_KEY),
            ConfigMapEnv(name="FORGE_NATS__USER", config_map_name=spec.nats_config_map, config_map_key=NATS_USER_KEY),
            SecretEnv(name="FORGE_NATS__PASSWORD", secret_name=spec.nats_secret, secret_key=NATS_PASSWORD_KEY),
        ],
        resources=m.ResourceRequirements(
            requests={"cpu": m.Quantity("50m"), "memory": m.Quantity("128Mi")},
            limits={"cpu": m.Quantity("200m"), "memory": m.Quantity("256Mi")},
        ),
        labels={f"{LABEL_PREFIX}/{name}": f"{{{{inputs.parameters.{name}}}}}" for name in ("phase", "project", "step")},
        active_deadline_seconds=timeout_seconds + DEADLINE_GRACE_SECONDS,
        retry_strategy=retry,
    )
