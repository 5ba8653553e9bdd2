-- The whole schema of DESIGN §4: repositories, pipeline runs and their executions, releases,
-- release aliases and artifacts, approvals and deployments. Every key is a UUID from
-- gen_random_uuid(); every table has created_at/updated_at (updated_at kept by a trigger);
-- every write is idempotent by the natural key named in a UNIQUE constraint.

CREATE FUNCTION forge_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE repositories (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name               text        NOT NULL,
    clone_url          text        NOT NULL,
    default_branch     text        NOT NULL DEFAULT 'main',
    webhook_secret_ref text,
    enabled            boolean     NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT repositories_name_key UNIQUE (name),
    CONSTRAINT repositories_name_format CHECK (name ~ '^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$' AND length(name) <= 200),
    CONSTRAINT repositories_clone_url_present CHECK (clone_url <> ''),
    CONSTRAINT repositories_default_branch_present CHECK (default_branch <> '')
);

CREATE TABLE pipeline_runs (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    repository_id    uuid        NOT NULL REFERENCES repositories (id) ON DELETE RESTRICT,
    branch           text,
    commit_sha       text        NOT NULL,
    base_sha         text,
    trigger          text        NOT NULL,
    triggered_by     text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    discovery_status text        NOT NULL DEFAULT 'pending',
    discovery        jsonb,
    discovery_key    text,
    error            text,
    github_context   jsonb,
    workflow_name    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    CONSTRAINT pipeline_runs_commit_key UNIQUE (repository_id, commit_sha),
    CONSTRAINT pipeline_runs_commit_sha_format CHECK (commit_sha ~ '^[0-9a-f]{40}$'),
    CONSTRAINT pipeline_runs_base_sha_format CHECK (base_sha IS NULL OR base_sha ~ '^[0-9a-f]{40}$'),
    CONSTRAINT pipeline_runs_trigger_value CHECK (trigger IN ('push', 'pull_request', 'tag', 'manual')),
    CONSTRAINT pipeline_runs_status_value
        CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled', 'skipped')),
    CONSTRAINT pipeline_runs_discovery_status_value
        CHECK (discovery_status IN ('pending', 'running', 'success', 'failed', 'cancelled', 'skipped'))
);
CREATE INDEX pipeline_runs_repository_branch_created ON pipeline_runs (repository_id, branch, created_at);
CREATE INDEX pipeline_runs_status_created ON pipeline_runs (status, created_at);
CREATE INDEX pipeline_runs_created ON pipeline_runs (created_at DESC, id);
CREATE INDEX pipeline_runs_discovery_open ON pipeline_runs (discovery_status, created_at)
    WHERE discovery_status IN ('pending', 'running');

CREATE TABLE phase_executions (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    run_id       uuid        NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    group_number integer     NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    started_at   timestamptz,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT phase_executions_name_key UNIQUE (run_id, name),
    CONSTRAINT phase_executions_group_number_range CHECK (group_number >= 0),
    CONSTRAINT phase_executions_status_value
        CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled', 'skipped'))
);
CREATE INDEX phase_executions_run_group ON phase_executions (run_id, group_number);

CREATE TABLE task_executions (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    phase_id     uuid        NOT NULL REFERENCES phase_executions (id) ON DELETE CASCADE,
    project      text        NOT NULL,
    project_path text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    started_at   timestamptz,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT task_executions_project_key UNIQUE (phase_id, project),
    CONSTRAINT task_executions_status_value
        CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled', 'skipped'))
);

CREATE TABLE step_executions (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id      uuid        NOT NULL REFERENCES task_executions (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    action       text        NOT NULL,
    target       text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    exit_code    integer,
    attempts     integer     NOT NULL DEFAULT 0,
    logs_key     text,
    started_at   timestamptz,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT step_executions_name_key UNIQUE (task_id, name),
    CONSTRAINT step_executions_attempts_range CHECK (attempts >= 0),
    CONSTRAINT step_executions_status_value
        CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled', 'skipped'))
);

CREATE TABLE releases (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    repository_id uuid        NOT NULL REFERENCES repositories (id) ON DELETE RESTRICT,
    project       text        NOT NULL,
    commit_sha    text        NOT NULL,
    number        integer     NOT NULL,
    oci_ref       text        NOT NULL,
    oci_digest    text        NOT NULL,
    trigger       text        NOT NULL,
    trigger_ref   text,
    run_id        uuid        REFERENCES pipeline_runs (id) ON DELETE SET NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT releases_commit_key UNIQUE (repository_id, project, commit_sha),
    CONSTRAINT releases_number_key UNIQUE (repository_id, project, number),
    -- the target of the deployments foreign key that keeps its (repository, project) copy honest
    CONSTRAINT releases_identity_key UNIQUE (id, repository_id, project),
    CONSTRAINT releases_commit_sha_format CHECK (commit_sha ~ '^[0-9a-f]{40}$'),
    CONSTRAINT releases_number_range CHECK (number >= 1),
    CONSTRAINT releases_oci_digest_format CHECK (oci_digest ~ '^[a-z0-9]+:[a-f0-9]{32,}$'),
    CONSTRAINT releases_trigger_value CHECK (trigger IN ('push', 'pull_request', 'tag', 'manual'))
);
CREATE INDEX releases_created ON releases (created_at);

CREATE TABLE release_aliases (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    release_id uuid        NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    alias      text        NOT NULL,
    type       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT release_aliases_alias_key UNIQUE (release_id, alias),
    CONSTRAINT release_aliases_type_value CHECK (type IN ('numeric', 'tag', 'branch', 'custom')),
    CONSTRAINT release_aliases_alias_present CHECK (alias <> '')
);
CREATE INDEX release_aliases_alias_type ON release_aliases (alias, type);

CREATE TABLE release_artifacts (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    release_id      uuid        NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    type            text        NOT NULL,
    tracking_ref    text        NOT NULL,
    tracking_digest text        NOT NULL,
    published       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT release_artifacts_name_key UNIQUE (release_id, name),
    CONSTRAINT release_artifacts_type_value CHECK (type IN ('container', 'binary', 'archive')),
    CONSTRAINT release_artifacts_published_array CHECK (jsonb_typeof(published) = 'array')
);

CREATE TABLE approvals (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    release_id    uuid        NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    environment   text        NOT NULL,
    approver      text        NOT NULL,
    justification text        NOT NULL,
    expires_at    timestamptz NOT NULL,
    status        text        NOT NULL DEFAULT 'active',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT approvals_status_value CHECK (status IN ('active', 'expired', 'revoked')),
    CONSTRAINT approvals_justification_present CHECK (justification <> '')
);
CREATE INDEX approvals_release_environment ON approvals (release_id, environment);
CREATE INDEX approvals_approver_created ON approvals (approver, created_at);

CREATE TABLE deployments (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    release_id     uuid        NOT NULL,
    repository_id  uuid        NOT NULL,
    project        text        NOT NULL,
    environment    text        NOT NULL,
    status         text        NOT NULL DEFAULT 'pending',
    gitops_commit  text,
    deployed_by    text        NOT NULL,
    approval_id    uuid        REFERENCES approvals (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deployments_release_fkey FOREIGN KEY (release_id, repository_id, project)
        REFERENCES releases (id, repository_id, project) ON DELETE CASCADE,
    CONSTRAINT deployments_status_value CHECK (status IN ('pending', 'active', 'superseded', 'failed')),
    CONSTRAINT deployments_gitops_commit_format CHECK (gitops_commit IS NULL OR gitops_commit ~ '^[0-9a-f]{40}$')
);
-- One active deployment per (environment, repository, project) (facts sheet §1.3 REC).
CREATE UNIQUE INDEX deployments_one_active ON deployments (environment, repository_id, project)
    WHERE status = 'active';
CREATE INDEX deployments_environment_status ON deployments (environment, status);
CREATE INDEX deployments_release_environment ON deployments (release_id, environment);

CREATE TRIGGER repositories_updated_at BEFORE UPDATE ON repositories
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER pipeline_runs_updated_at BEFORE UPDATE ON pipeline_runs
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER phase_executions_updated_at BEFORE UPDATE ON phase_executions
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER task_executions_updated_at BEFORE UPDATE ON task_executions
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER step_executions_updated_at BEFORE UPDATE ON step_executions
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER releases_updated_at BEFORE UPDATE ON releases
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER release_aliases_updated_at BEFORE UPDATE ON release_aliases
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER release_artifacts_updated_at BEFORE UPDATE ON release_artifacts
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER approvals_updated_at BEFORE UPDATE ON approvals
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
CREATE TRIGGER deployments_updated_at BEFORE UPDATE ON deployments
    FOR EACH ROW EXECUTE FUNCTION forge_set_updated_at();
