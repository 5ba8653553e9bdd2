-- The newest change of each run (issue 12): the version of its executions document, one primary-key
-- probe instead of aggregates over the run's phase, task and step rows. Every write of the store that
-- changes a phase, task or step records a change of the run in the same transaction
-- (`SQL_INSERT_CHANGES` keeps this row in the same statement), so an unchanged head means an
-- unchanged document. A head only grows and is never pruned (one row per run, deleted with the run):
-- pruning `run_changes` cannot make a run's version go back to one it had before.

CREATE TABLE run_heads (
    run_id    uuid   PRIMARY KEY REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    change_id bigint NOT NULL
) WITH (fillfactor = 50);  -- updated by every write of its run: room for HOT updates

INSERT INTO run_heads (run_id, change_id) SELECT run_id, max(id) FROM run_changes GROUP BY run_id;
