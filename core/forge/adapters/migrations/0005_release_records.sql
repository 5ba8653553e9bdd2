-- Release records (issue 8): what a release was cut from (branch, tag), when its number tag reached
-- the registry (tagged_at, filled by the controller after recording), aliases unique within their
-- project (a ref resolves to one release), and the reads' indexes.

ALTER TABLE releases
    ADD COLUMN branch    text,
    ADD COLUMN tag       text,
    ADD COLUMN tagged_at timestamptz,
    ADD CONSTRAINT releases_project_format CHECK (project ~ '^[a-z][a-z0-9-]*$');

-- Releases waiting for their number tag (releases_to_tag), oldest first.
CREATE INDEX releases_untagged ON releases (created_at, id) WHERE tagged_at IS NULL;
-- The newest releases of one project, and the listing across projects (newest first).
CREATE INDEX releases_project_created ON releases (repository_id, project, created_at DESC, id);
CREATE INDEX releases_created_desc ON releases (created_at DESC, id);
DROP INDEX releases_created;
CREATE INDEX releases_run ON releases (run_id) WHERE run_id IS NOT NULL;

-- An alias names one release of its (repository, project): the copy of both is kept honest by the
-- foreign key to releases_identity_key, as deployments do.
ALTER TABLE release_aliases
    ADD COLUMN repository_id uuid,
    ADD COLUMN project       text;
UPDATE release_aliases a SET repository_id = r.repository_id, project = r.project
    FROM releases r WHERE r.id = a.release_id;
ALTER TABLE release_aliases
    ALTER COLUMN repository_id SET NOT NULL,
    ALTER COLUMN project SET NOT NULL,
    ADD CONSTRAINT release_aliases_release_identity_fkey FOREIGN KEY (release_id, repository_id, project)
        REFERENCES releases (id, repository_id, project) ON DELETE CASCADE,
    ADD CONSTRAINT release_aliases_project_alias_key UNIQUE (repository_id, project, alias);

