-- Claim leases: a controller that dies while holding claims leaves its work waiting one short lease
-- (FORGE_CONTROLLER__CLAIM_LEASE, 30 s), not 5 minutes. A claim names its claimer (one controller
-- instance), which renews it (stamps the claim time again) while it works on the run or deployment; a
-- claim not renewed for the lease is taken over by another claimer, and the former holder's next
-- renewal finds another name and stops without writing. Claims made before this migration name nobody:
-- they are renewed by no one, so they are taken over after one lease.

ALTER TABLE pipeline_runs
    ADD COLUMN execution_claimed_by text
        CONSTRAINT pipeline_runs_execution_claimed_by_length CHECK (length(execution_claimed_by) BETWEEN 1 AND 256);

ALTER TABLE deployments
    ADD COLUMN claimed_by text CONSTRAINT deployments_claimed_by_length CHECK (length(claimed_by) BETWEEN 1 AND 256);
