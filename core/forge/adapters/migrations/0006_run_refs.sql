-- Runs are keyed by what they are for, not only by their commit (issue 8): a tag pushed on a commit
-- that already ran for its branch must still run (its tag-triggered releases need a run), and a manual
-- release request is a run of its own. `ref` is `refs/heads/<branch>`, `refs/tags/<tag>` or '', plus
-- `#release=<projects>` for a manual release request (the rule is `NewRun.ref` in the store port).

ALTER TABLE pipeline_runs
    ADD COLUMN tag              text,
    ADD COLUMN release_projects text[] NOT NULL DEFAULT '{}',
    ADD COLUMN ref              text   NOT NULL DEFAULT '';

-- Runs created before: tag runs kept their ref in the GitHub context only.
UPDATE pipeline_runs SET tag = substr(github_context ->> 'ref', 11)
WHERE trigger = 'tag' AND github_context ->> 'ref' LIKE 'refs/tags/%';
UPDATE pipeline_runs SET ref = CASE
    WHEN tag IS NOT NULL THEN 'refs/tags/' || tag
    WHEN branch IS NOT NULL AND branch <> '' THEN 'refs/heads/' || branch
    ELSE '' END;

ALTER TABLE pipeline_runs
    DROP CONSTRAINT pipeline_runs_commit_key,
    ADD CONSTRAINT pipeline_runs_ref_key UNIQUE (repository_id, commit_sha, ref),
    ADD CONSTRAINT pipeline_runs_branch_or_tag CHECK (branch IS NULL OR tag IS NULL);
