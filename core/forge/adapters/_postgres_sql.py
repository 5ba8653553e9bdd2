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
            (repository_id, branch, commit_sha, base_sha, trigger, triggered_by, github_context,
             tag, release_projects, ref)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (repository_id, commit_sha, ref) DO NOTHING
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
#: Claim up to $1 ready runs for claimer $3: never claimed, or not renewed for $2 s (the lease).
SQL_CLAIM_EXECUTION = f"""
    WITH r AS (
        UPDATE pipeline_runs SET execution_claimed_at = now(), execution_claimed_by = $3
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
#: ``SQL_CLAIM_EXECUTION`` under a quota of $4 executing runs per repository (a workflow recorded, or a
#: claim renewed within $2 s): the oldest ready runs of each repository fill its free places. Run after
#: ``pg_advisory_xact_lock(CLAIM_LOCK)`` in the same transaction, so two claimers never both fill one place.
SQL_CLAIM_EXECUTION_QUOTA = f"""
    WITH ready AS (
        SELECT id, repository_id, created_at FROM pipeline_runs
        WHERE status = 'running' AND discovery_status = 'success' AND workflow_name IS NULL
          AND cancel_requested_at IS NULL
          AND (execution_claimed_at IS NULL OR execution_claimed_at < now() - make_interval(secs => $2))
        FOR UPDATE SKIP LOCKED
    ), busy AS (
        SELECT repository_id, count(*) AS n FROM pipeline_runs
        WHERE status = 'running'
          AND (workflow_name IS NOT NULL OR execution_claimed_at >= now() - make_interval(secs => $2))
        GROUP BY repository_id
    ), ranked AS (
        SELECT ready.id, ready.created_at, coalesce(busy.n, 0)
            + row_number() OVER (PARTITION BY ready.repository_id ORDER BY ready.created_at, ready.id) AS place
        FROM ready LEFT JOIN busy USING (repository_id)
    ), r AS (
        UPDATE pipeline_runs SET execution_claimed_at = now(), execution_claimed_by = $3
        WHERE id IN (SELECT id FROM ranked WHERE place <= $4 ORDER BY created_at, id LIMIT $1)
        RETURNING *
    )
    {FROM_CTE}
    ORDER BY r.created_at, r.id
"""  # noqa: S608
#: Renew claimer $2's claims on runs $1; the ids it still holds (no other claimer took them over).
SQL_RENEW_EXECUTION_CLAIMS = """
    UPDATE pipeline_runs SET execution_claimed_at = now()
    WHERE id = ANY($1::uuid[]) AND execution_claimed_by = $2 RETURNING id
"""
#: Release claimer $2's claims on runs $1 (claimable again at once); the ids released.
SQL_RELEASE_EXECUTION_CLAIMS = """
    UPDATE pipeline_runs SET execution_claimed_at = NULL, execution_claimed_by = NULL
    WHERE id = ANY($1::uuid[]) AND execution_claimed_by = $2 RETURNING id
"""
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
# -- run changes (the outbox GET /v1/runs/{id}/events reads; 0004_run_changes.sql) ------------------
#: One statement per transaction: the changes in order (ids follow it), each run's head moved to its
#: newest change (``run_heads``: the version of its executions document, 0010_run_heads.sql), then one
#: NOTIFY per run (delivered at COMMIT, so a watcher never hears of an uncommitted change).
SQL_INSERT_CHANGES = """
    WITH c AS (
        INSERT INTO run_changes (run_id, kind, entity_id, status, body)
        SELECT x.run_id, x.kind, x.entity_id, x.status, x.body::jsonb
        FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[]) WITH ORDINALITY
            AS x(run_id, kind, entity_id, status, body, n)
        ORDER BY x.n
        RETURNING id, run_id
    ), heads AS (
        INSERT INTO run_heads AS h (run_id, change_id)
        SELECT run_id, max(id) FROM c GROUP BY run_id
        ON CONFLICT (run_id) DO UPDATE SET change_id = GREATEST(h.change_id, EXCLUDED.change_id)
    )
    SELECT pg_notify('run_changes', n.run_id::text) FROM (SELECT DISTINCT run_id FROM c) AS n
"""
#: The runs of the steps an event batch changes, locked (in id order) before the steps: a run's
#: changes are written by one transaction at a time, so its change ids commit in order.
SQL_LOCK_RUNS_OF_STEPS = """
    SELECT s.id AS step_id, r.id AS run_id
    FROM step_executions s JOIN task_executions t ON t.id = s.task_id
    JOIN phase_executions p ON p.id = t.phase_id JOIN pipeline_runs r ON r.id = p.run_id
    WHERE s.id = ANY($1::uuid[]) ORDER BY r.id FOR NO KEY UPDATE OF r
"""
SQL_RUN_OF_STEP = """
    SELECT p.run_id FROM step_executions s JOIN task_executions t ON t.id = s.task_id
    JOIN phase_executions p ON p.id = t.phase_id WHERE s.id = $1
"""
SQL_LOCK_RUN = "SELECT id FROM pipeline_runs WHERE id = $1 FOR NO KEY UPDATE"
SQL_SET_TASK_STATUS_OF_RUN = f"""
    WITH t AS (UPDATE task_executions SET status = $2, {STAMPS} WHERE id = $1 RETURNING *)
    SELECT t.*, p.run_id FROM t JOIN phase_executions p ON p.id = t.phase_id
"""  # noqa: S608
#: finish_run's sweep, returning the swept steps (their changes).
SQL_SWEEP_STEPS_RETURNING = f"""
    UPDATE step_executions s SET
        status = CASE WHEN s.status = 'pending' THEN 'skipped' ELSE 'cancelled' END,
        completed_at = COALESCE(s.completed_at, now())
    FROM task_executions t JOIN phase_executions p ON p.id = t.phase_id
    WHERE s.task_id = t.id AND p.run_id = $1 AND s.status IN {UNFINISHED}
    RETURNING s.*
"""  # noqa: S608
#: Changes of runs that finished more than $1 seconds ago (bounded per call; finish_run runs it).
SQL_PRUNE_CHANGES = f"""
    DELETE FROM run_changes WHERE id IN (
        SELECT c.id FROM run_changes c JOIN pipeline_runs r ON r.id = c.run_id
        WHERE c.at < now() - make_interval(secs => $1) AND r.status IN {FINAL}
          AND r.completed_at < now() - make_interval(secs => $1)
        LIMIT 10000
    )
"""  # noqa: S608
SQL_CHANGES_SINCE = """
    SELECT id, run_id, kind, entity_id, status, body, at FROM run_changes
    WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3
"""
SQL_LAST_CHANGE = "SELECT COALESCE(max(id), 0) FROM run_changes WHERE run_id = $1"

# -- reads answered as JSON built by PostgreSQL (``RunStore.run_json`` and friends) ---------------------
# Text is concatenated, not ``json_build_object``'d: that one writes ``"key" : value`` and the API sends
# compact JSON. ``to_json(text)`` escapes exactly as msgspec (Litestar's encoder) does; timestamps are
# written as pydantic writes an aware UTC datetime. A row's version is its ``xmin``: every UPDATE
# writes a new one, a lock does not.


def _json_str(column: str) -> str:
    return f"COALESCE(to_json({column})::text, 'null')"


def _json_uuid(column: str) -> str:
    return f"""('"' || {column}::text || '"')"""


def _json_int(column: str) -> str:
    return f"COALESCE({column}::text, 'null')"


def _json_time(column: str) -> str:
    """``"2024-05-01T10:00:00.123400Z"``, or ``"...T10:00:00Z"`` on a whole second (as pydantic)."""
    text = f"""replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '.000000', '')"""
    return f"""COALESCE('"' || {text} || 'Z"', 'null')"""


def _json_object(fields: list[tuple[str, str]]) -> str:
    """``{"name":<sql>,...}`` from (name, SQL expression yielding the JSON text) pairs; names are constants."""
    parts = [f"'{'{' if i == 0 else ','}\"{name}\":' || {sql}" for i, (name, sql) in enumerate(fields)]
    return "(" + " || ".join(parts) + " || '}')"


#: A ``RunOut`` object of ``pipeline_runs r`` joined with ``repositories repo`` (no ``github_context``).
RUN_JSON = _json_object(
    [
        ("id", _json_uuid("r.id")),
        ("repository", _json_str("repo.name")),
        ("branch", _json_str("r.branch")),
        ("tag", _json_str("r.tag")),
        ("release_projects", "to_json(r.release_projects)::text"),
        ("commit_sha", _json_str("r.commit_sha")),
        ("base_sha", _json_str("r.base_sha")),
        ("trigger", _json_str("r.trigger")),
        ("triggered_by", _json_str("r.triggered_by")),
        ("status", _json_str("r.status")),
        ("discovery_status", _json_str("r.discovery_status")),
        ("discovery", "COALESCE(r.discovery::text, 'null')"),
        ("discovery_key", _json_str("r.discovery_key")),
        ("error", _json_str("r.error")),
        ("error_code", _json_str("r.error_code")),
        ("workflow_name", _json_str("r.workflow_name")),
        ("cancel_requested_at", _json_time("r.cancel_requested_at")),
        ("created_at", _json_time("r.created_at")),
        ("updated_at", _json_time("r.updated_at")),
        ("started_at", _json_time("r.started_at")),
        ("completed_at", _json_time("r.completed_at")),
    ]
)
#: The version of ``run_json(run_id=$1)`` alone: a caller holding a document asks this first.
SQL_RUN_VERSION = "SELECT r.xmin::text AS version FROM pipeline_runs r WHERE r.id = $1"
#: ``run_json(run_id=$1)``; ``body`` is NULL when the version is ``$2`` (the caller has those bytes).
SQL_RUN_JSON = f"""
    SELECT r.xmin::text AS version,
           CASE WHEN r.xmin::text = $2 THEN NULL ELSE convert_to({RUN_JSON}, 'UTF8') END AS body
    FROM {RUNS} WHERE r.id = $1
"""  # noqa: S608
#: ``runs_json``: ``{where}`` (a WHERE of ``$1..$n``), ``{limit}`` and ``{offset}`` (``$n+1``, ``$n+2``)
#: replaced by the caller (``str.replace``: the JSON has braces of its own). One statement: the count
#: and the page.
SQL_RUNS_JSON = f"""
    WITH page AS (
        SELECT r.created_at, r.id, r.xmin::text AS v, {RUN_JSON} AS doc FROM {RUNS} {{where}}
        ORDER BY r.created_at DESC, r.id LIMIT {{limit}}::bigint OFFSET {{offset}}::bigint
    )
    SELECT convert_to('{{"items":[' || COALESCE(string_agg(doc, ',' ORDER BY created_at DESC, id), '')
                      || '],"total":' || t.total || ',"limit":' || {{limit}}::bigint
                      || ',"offset":' || {{offset}}::bigint || '}}', 'UTF8') AS body,
           t.total, md5(t.total || ':' || COALESCE(string_agg(v, ',' ORDER BY created_at DESC, id), '')) AS version
    FROM (SELECT count(*) AS total FROM {RUNS} {{where}}) t LEFT JOIN page ON true
    GROUP BY t.total
"""  # noqa: S608
_STEP_JSON = _json_object(
    [
        ("id", _json_uuid("s.id")),
        ("task_id", _json_uuid("s.task_id")),
        ("name", _json_str("s.name")),
        ("action", _json_str("s.action")),
        ("target", _json_str("s.target")),
        ("status", _json_str("s.status")),
        ("exit_code", _json_int("s.exit_code")),
        ("attempts", _json_int("s.attempts")),
        ("logs_key", _json_str("s.logs_key")),
        ("created_at", _json_time("s.created_at")),
        ("updated_at", _json_time("s.updated_at")),
        ("started_at", _json_time("s.started_at")),
        ("completed_at", _json_time("s.completed_at")),
        ("message", _json_str("s.message")),
    ]
)
_TASK_JSON = _json_object(
    [
        ("id", _json_uuid("t.id")),
        ("phase_id", _json_uuid("t.phase_id")),
        ("project", _json_str("t.project")),
        ("project_path", _json_str("t.project_path")),
        ("status", _json_str("t.status")),
        ("created_at", _json_time("t.created_at")),
        ("updated_at", _json_time("t.updated_at")),
        ("started_at", _json_time("t.started_at")),
        ("completed_at", _json_time("t.completed_at")),
        ("steps", "'[' || COALESCE(ts.docs, '') || ']'"),
    ]
)
_PHASE_JSON = _json_object(
    [
        ("id", _json_uuid("p.id")),
        ("run_id", _json_uuid("p.run_id")),
        ("name", _json_str("p.name")),
        ("group", _json_int("p.group_number")),
        ("status", _json_str("p.status")),
        ("created_at", _json_time("p.created_at")),
        ("updated_at", _json_time("p.updated_at")),
        ("started_at", _json_time("p.started_at")),
        ("completed_at", _json_time("p.completed_at")),
        ("tasks", "'[' || COALESCE(pt.docs, '') || ']'"),
    ]
)
#: The version of the executions of run ``r`` (``r.id = $1``): its head (``run_heads``: its newest change,
#: one primary-key probe). Every write of the store that changes a phase, task or step records a change of
#: the run in the same transaction, and a head only grows. A run without a head (its changes were pruned
#: before heads were kept) falls back to counts and sums of the rows' xmin (an UPDATE gives its row a
#: newer xid, so a sum only grows), computed only then; the two forms (``c…``, ``x…``) never meet.
_EXECUTIONS_VERSION = """COALESCE(
        'c' || (SELECT h.change_id FROM run_heads h WHERE h.run_id = r.id),
        (SELECT 'x' || concat_ws('.', ps.n, ps.x, ts.n, ts.x, ss.n, ss.x)
         FROM (SELECT count(*) AS n, sum(xmin::text::bigint) AS x FROM phase_executions WHERE run_id = $1) ps,
              (SELECT count(*) AS n, sum(xmin::text::bigint) AS x FROM task_executions
               WHERE phase_id = ANY(ARRAY(SELECT id FROM phase_executions WHERE run_id = $1))) ts,
              (SELECT count(*) AS n, sum(xmin::text::bigint) AS x FROM step_executions
               WHERE task_id = ANY(ARRAY(SELECT t.id FROM task_executions t
                                         JOIN phase_executions p ON p.id = t.phase_id WHERE p.run_id = $1))) ss))"""
#: The version of ``executions_json(run_id=$1, ...)`` alone (every page has the run's version): a caller
#: holding a document asks this first, and only builds when it moved.
SQL_EXECUTIONS_VERSION = f"SELECT {_EXECUTIONS_VERSION} AS version FROM pipeline_runs r WHERE r.id = $1"  # noqa: S608
#: ``executions_json(run_id=$1, offset=$2, limit=$3)``: the version (``_EXECUTIONS_VERSION``), the total
#: and the body; the body and the total, built only when the version is not ``$4`` (the caller holds those
#: bytes), are in CTEs referenced only inside the CASEs, which PostgreSQL never runs for an unchanged
#: run. Steps are numbered in tree order and paged; the page's steps are grouped by task once, tasks by
#: phase once.
SQL_EXECUTIONS_JSON = f"""
    WITH phases AS (SELECT p.* FROM phase_executions p WHERE p.run_id = $1),
    tasks AS (SELECT t.* FROM task_executions t JOIN phases p ON p.id = t.phase_id),
    steps AS (
        SELECT s.*, row_number() OVER (ORDER BY p.group_number, p.name, t.project, s.position, s.name) - 1 AS n
        FROM step_executions s JOIN tasks t ON t.id = s.task_id JOIN phases p ON p.id = t.phase_id
    ),
    page AS (SELECT * FROM steps WHERE n >= $2 AND n < $2 + $3),
    kept_tasks AS (
        SELECT t.* FROM tasks t
        WHERE EXISTS (SELECT FROM page s WHERE s.task_id = t.id)
           OR ($2 = 0 AND NOT EXISTS (SELECT FROM steps s WHERE s.task_id = t.id))
    ),
    kept_phases AS (
        SELECT p.* FROM phases p
        WHERE EXISTS (SELECT FROM kept_tasks t WHERE t.phase_id = p.id)
           OR ($2 = 0 AND NOT EXISTS (SELECT FROM tasks t WHERE t.phase_id = p.id))
    ),
    step_docs AS (SELECT s.task_id, string_agg({_STEP_JSON}, ',' ORDER BY s.n) AS docs FROM page s GROUP BY s.task_id),
    task_docs AS (
        SELECT t.phase_id, string_agg({_TASK_JSON}, ',' ORDER BY t.project) AS docs
        FROM kept_tasks t LEFT JOIN step_docs ts ON ts.task_id = t.id GROUP BY t.phase_id
    ),
    phase_docs AS (
        SELECT string_agg({_PHASE_JSON}, ',' ORDER BY p.group_number, p.name) AS docs
        FROM kept_phases p LEFT JOIN task_docs pt ON pt.phase_id = p.id
    ),
    head AS MATERIALIZED (SELECT r.id, {_EXECUTIONS_VERSION} AS v FROM pipeline_runs r WHERE r.id = $1)
    SELECT head.v AS version,
           CASE WHEN head.v = $4 THEN NULL ELSE (SELECT count(*) FROM steps) END AS total,
           CASE WHEN head.v = $4 THEN NULL
                ELSE convert_to('{{"run_id":"' || head.id::text || '","phases":['
                                || COALESCE((SELECT docs FROM phase_docs), '') || ']}}', 'UTF8') END AS body
    FROM head
"""  # noqa: S608
