-- Deployments and approvals (issue 9): why a deployment was asked for, why it failed, when it was
-- claimed by a controller and when it ended; who revoked an approval; and which releases have had
-- their automatic deployments requested (so a controller restart requests none twice).

ALTER TABLE deployments
    ADD COLUMN reason       text NOT NULL DEFAULT '',
    ADD COLUMN error        text,
    ADD COLUMN claimed_at   timestamptz,
    ADD COLUMN completed_at timestamptz,
    ADD CONSTRAINT deployments_environment_format CHECK (environment ~ '^[a-z][a-z0-9-]{0,62}$');

-- Pending deployments to claim, oldest first.
CREATE INDEX deployments_pending ON deployments (created_at, id) WHERE status = 'pending';
-- The history of one app in one environment, newest first.
CREATE INDEX deployments_app_created ON deployments (environment, repository_id, project, created_at DESC, id);

ALTER TABLE approvals
    ADD COLUMN revoked_by text,
    ADD CONSTRAINT approvals_environment_format CHECK (environment ~ '^[a-z][a-z0-9-]{0,62}$');

ALTER TABLE releases ADD COLUMN deploys_planned_at timestamptz;
-- Releases recorded before this migration are not deployed automatically after it.
UPDATE releases SET deploys_planned_at = created_at;
CREATE INDEX releases_deploys_unplanned ON releases (created_at, id) WHERE deploys_planned_at IS NULL;
