"""SQL of ``PostgresStore``, assembled once from constant fragments; values only travel as $n parameters."""

from __future__ import annotations

from forge.adapters._postgres_rows import RUN_COLUMNS

RUNS = "pipeline_runs r JOIN repositories repo ON repo.id = r.repository_id"
SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM {RUNS}"  # noqa: S608
#: Turns the rows of a ``WITH r AS (... RETURNING *)`` into run rows (with the repository name).
FROM_CTE = f"SELECT {RUN_COLUMNS} FROM r JOIN repositories repo ON repo.id = r.repository_id"  # noqa: S608
SQL_INSERT_RUN = f"""
    WITH r AS (
        INSERT INTO pipeline_runs
            (repository_id, branch, commit_sha, base_sha, trigger, triggered_by, github_context)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (repository_id, commit_sha) DO NOTHING
        RETURNING *
    )
    {FROM_CTE}
"""  # noqa: S608
SQL_CLAIM_DISCOVERY = f"""
    WITH r AS (
        UPDATE pipeline_runs SET
            discovery_status = 'running',
            status = CASE WHEN status = 'pending' THEN 'running' ELSE status END,
            started_at = COALESCE(started_at, now())
        WHERE id IN (
            SELECT id FROM pipeline_runs
            WHERE discovery_status = 'pending' AND status IN ('pending', 'running')
            ORDER BY created_at, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING *
    )
    {FROM_CTE}
    ORDER BY r.created_at, r.id
"""  # noqa: S608
SQL_RECORD_DISCOVERY = f"""
    WITH r AS (
        UPDATE pipeline_runs SET discovery_status = 'success', discovery = $2, discovery_key = $3
        WHERE id = $1 RETURNING *
    )
    {FROM_CTE}
"""  # noqa: S608
SQL_FAIL_DISCOVERY = f"""
    WITH r AS (
        UPDATE pipeline_runs SET
            discovery_status = 'failed', status = 'failed', error = $2, error_code = $3,
            completed_at = COALESCE(completed_at, now())
        WHERE id = $1 RETURNING *
    )
    {FROM_CTE}
"""  # noqa: S608
FINAL = "('success', 'failed', 'cancelled', 'skipped')"
UNFINISHED = "('pending', 'running')"
#: started_at is stamped when work begins (or ends having run), completed_at when a status is final.
STAMPS = f"""
    started_at = CASE WHEN $2 IN ('running', 'success', 'failed') THEN COALESCE(started_at, now())
                      ELSE started_at END,
    completed_at = CASE WHEN $2 IN {FINAL} THEN COALESCE(completed_at, now()) ELSE completed_at END
"""
SQL_SET_RUN_STATUS = f"""
    WITH r AS (
        UPDATE pipeline_runs SET status = $2, error = COALESCE($3, error), error_code = COALESCE($4, error_code),
            {STAMPS}
        WHERE id = $1 RETURNING *
    )
    {FROM_CTE}
"""  # noqa: S608
#: A run that ends before its discovery did: a running discovery is cancelled, a pending one skipped.
SQL_SETTLE_DISCOVERY = """
    UPDATE pipeline_runs SET discovery_status = CASE discovery_status
        WHEN 'running' THEN 'cancelled' WHEN 'pending' THEN 'skipped' ELSE discovery_status END
    WHERE id = $1 AND discovery_status IN ('pending', 'running')
"""
SQL_SET_WORKFLOW = f"""
    WITH r AS (UPDATE pipeline_runs SET workflow_name = $2 WHERE id = $1 RETURNING *)
    {FROM_CTE}
"""  # noqa: S608
SQL_REQUEST_CANCEL = f"""
    WITH r AS (
        UPDATE pipeline_runs SET cancel_requested_at = now()
        WHERE id = $1 AND cancel_requested_at IS NULL RETURNING *
    )
    {FROM_CTE}
"""  # noqa: S608
SQL_CLAIM_EXECUTION = f"""
    WITH r AS (
        UPDATE pipeline_runs SET execution_claimed_at = now()
        WHERE id IN (
            SELECT id FROM pipeline_runs
            WHERE status = 'running' AND discovery_status = 'success' AND workflow_name IS NULL
              AND cancel_requested_at IS NULL
              AND (execution_claimed_at IS NULL OR execution_claimed_at < now() - make_interval(secs => $2))
            ORDER BY created_at, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING *
    )
    {FROM_CTE}
    ORDER BY r.created_at, r.id
"""  # noqa: S608
SQL_INSERT_PHASES = """
    INSERT INTO phase_executions (run_id, name, group_number)
    SELECT $1, x.name, x.group_number FROM unnest($2::text[], $3::integer[]) AS x(name, group_number)
    ON CONFLICT (run_id, name) DO NOTHING
"""
SQL_INSERT_TASKS = """
    INSERT INTO task_executions (phase_id, project, project_path)
    SELECT p.id, x.project, x.path
    FROM unnest($2::text[], $3::text[], $4::text[]) AS x(phase, project, path)
    JOIN phase_executions p ON p.run_id = $1 AND p.name = x.phase
    ON CONFLICT (phase_id, project) DO NOTHING
"""
SQL_INSERT_STEPS = """
    INSERT INTO step_executions (task_id, name, action, target, position)
    SELECT t.id, x.name, x.action, x.target, x.position
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::integer[])
        AS x(phase, project, name, action, target, position)
    JOIN phase_executions p ON p.run_id = $1 AND p.name = x.phase
    JOIN task_executions t ON t.phase_id = p.id AND t.project = x.project
    ON CONFLICT (task_id, name) DO NOTHING
"""
SQL_PHASES_OF_RUN = "SELECT * FROM phase_executions WHERE run_id = $1 ORDER BY group_number, name"
SQL_TASKS_OF_RUN = """
    SELECT t.* FROM task_executions t JOIN phase_executions p ON p.id = t.phase_id
    WHERE p.run_id = $1 ORDER BY p.group_number, p.name, t.project
"""
SQL_STEPS_OF_RUN = """
    SELECT s.* FROM step_executions s
    JOIN task_executions t ON t.id = s.task_id JOIN phase_executions p ON p.id = t.phase_id
    WHERE p.run_id = $1 ORDER BY p.group_number, p.name, t.project, s.position, s.name
"""
#: Steps an event batch changes, locked in id order (the order every writer of steps takes).
SQL_LOCK_STEPS = "SELECT * FROM step_executions WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
SQL_UPDATE_STEPS = """
    UPDATE step_executions s SET
        status = x.status, attempts = x.attempts, exit_code = x.exit_code, logs_key = x.logs_key,
        message = x.message, started_at = x.started_at, completed_at = x.completed_at
    FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::integer[], $5::text[], $6::text[],
                $7::timestamptz[], $8::timestamptz[])
        AS x(id, status, attempts, exit_code, logs_key, message, started_at, completed_at)
    WHERE s.id = x.id
"""
SQL_LOCK_TASKS = "SELECT id FROM task_executions WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
#: Roll-ups need the set of child statuses, not every child: DISTINCT keeps a 1,000-step task cheap.
SQL_TASK_CHILDREN = """
    SELECT t.id, t.phase_id, t.status, array_agg(DISTINCT s.status) AS children
    FROM task_executions t JOIN step_executions s ON s.task_id = t.id
    WHERE t.id = ANY($1::uuid[]) GROUP BY t.id
"""
SQL_LOCK_PHASES = "SELECT id FROM phase_executions WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
SQL_PHASE_CHILDREN = """
    SELECT p.id, p.status, array_agg(DISTINCT t.status) AS children
    FROM phase_executions p JOIN task_executions t ON t.phase_id = p.id
    WHERE p.id = ANY($1::uuid[]) GROUP BY p.id
"""
SQL_SET_TASK_STATUS = f"UPDATE task_executions SET status = $2, {STAMPS} WHERE id = $1 RETURNING *"  # noqa: S608
SQL_SET_PHASE_STATUS = f"UPDATE phase_executions SET status = $2, {STAMPS} WHERE id = $1 RETURNING *"  # noqa: S608
SQL_LOCK_STEPS_OF_RUN = """
    SELECT s.id FROM step_executions s
    JOIN task_executions t ON t.id = s.task_id JOIN phase_executions p ON p.id = t.phase_id
    WHERE p.run_id = $1 ORDER BY s.id FOR UPDATE OF s
"""
#: finish_run: nothing of a finished run is left pending or running.
SQL_SWEEP_STEPS = f"""
    UPDATE step_executions s SET
        status = CASE WHEN s.status = 'pending' THEN 'skipped' ELSE 'cancelled' END,
        completed_at = COALESCE(s.completed_at, now())
    FROM task_executions t JOIN phase_executions p ON p.id = t.phase_id
    WHERE s.task_id = t.id AND p.run_id = $1 AND s.status IN {UNFINISHED}
"""  # noqa: S608
SQL_LOCK_TASKS_OF_RUN = """
    SELECT t.id FROM task_executions t JOIN phase_executions p ON p.id = t.phase_id
    WHERE p.run_id = $1 ORDER BY t.id FOR UPDATE OF t
"""
SQL_TASK_CHILDREN_OF_RUN = """
    SELECT t.id, t.status, array_remove(array_agg(DISTINCT s.status), NULL) AS children
    FROM task_executions t JOIN phase_executions p ON p.id = t.phase_id
    LEFT JOIN step_executions s ON s.task_id = t.id
    WHERE p.run_id = $1 GROUP BY t.id
"""
SQL_PHASE_CHILDREN_OF_RUN = """
    SELECT p.id, p.status, array_remove(array_agg(DISTINCT t.status), NULL) AS children
    FROM phase_executions p LEFT JOIN task_executions t ON t.phase_id = p.id
    WHERE p.run_id = $1 GROUP BY p.id
"""
