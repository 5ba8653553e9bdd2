-- Argo CD health survives a controller restart (issue 9): a pending deployment whose pointer is
-- committed records its GitOps commit and when it was committed, so any controller follows it at
-- once (``committed_deployments``) instead of waiting for its claim to go stale, and the health
-- timeout runs from the commit, not from the restart.

ALTER TABLE deployments ADD COLUMN committed_at timestamptz;

-- Committed pending deployments to follow, longest-waiting first.
CREATE INDEX deployments_committed ON deployments (committed_at, id)
    WHERE status = 'pending' AND committed_at IS NOT NULL;
