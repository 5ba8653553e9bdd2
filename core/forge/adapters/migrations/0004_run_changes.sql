-- Watching runs (GET /v1/runs/{id}/events): an outbox of status changes. Every write of the store
-- that changes a status of a run, phase, task or step inserts one row per changed entity in the
-- same transaction and then NOTIFYs `run_changes` with the run id (delivered on commit only).
-- A watcher reads the rows of its run after the id it has seen; the ids of one run commit in
-- order because every writer of a run's changes holds the run's row lock until it commits.
-- Rows of runs finished more than 24 h ago are deleted by `finish_run`.

CREATE TABLE run_changes (
    id        bigserial   PRIMARY KEY,
    run_id    uuid        NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text        NOT NULL,
    entity_id uuid        NOT NULL,
    status    text        NOT NULL,
    body      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT run_changes_kind_value CHECK (kind IN ('run', 'phase', 'task', 'step'))
);
CREATE INDEX run_changes_run ON run_changes (run_id, id);
-- The prune scans only rows older than its cutoff.
CREATE INDEX run_changes_at ON run_changes (at);
