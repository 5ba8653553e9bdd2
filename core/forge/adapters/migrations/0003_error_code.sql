-- Why a run failed, as a machine-readable code (the error tree's ``code``: invalid_config,
-- step_failed, internal, ...), so clients branch on it instead of matching message text.

ALTER TABLE pipeline_runs ADD COLUMN error_code text;
