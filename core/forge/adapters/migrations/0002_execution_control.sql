-- Pipeline execution: the controller's claim on a run (so one controller submits its workflow),
-- cancel requests (DELETE /v1/runs/{id}), the declared order of a task's steps and a step's last
-- message from its worker.

ALTER TABLE pipeline_runs
    ADD COLUMN execution_claimed_at timestamptz,
    ADD COLUMN cancel_requested_at  timestamptz;

-- Runs waiting for a workflow (claim_execution) and runs whose cancel is pending.
CREATE INDEX pipeline_runs_execution_ready ON pipeline_runs (created_at, id)
    WHERE status = 'running' AND discovery_status = 'success' AND workflow_name IS NULL;
CREATE INDEX pipeline_runs_executing ON pipeline_runs (created_at, id)
    WHERE status = 'running' AND workflow_name IS NOT NULL;
CREATE INDEX pipeline_runs_cancel_requested ON pipeline_runs (cancel_requested_at)
    WHERE cancel_requested_at IS NOT NULL AND status IN ('pending', 'running');

ALTER TABLE step_executions
    ADD COLUMN position integer NOT NULL DEFAULT 0,
    ADD COLUMN message  text,
    ADD CONSTRAINT step_executions_position_range CHECK (position >= 0);

CREATE INDEX step_executions_task_position ON step_executions (task_id, position);
