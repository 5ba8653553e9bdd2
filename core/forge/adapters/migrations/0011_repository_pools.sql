-- Worker pools (issue 7, one pool per trust boundary): the jobs of a repository's runs travel on
-- `<type prefix>.<pool>.…` and only workers started with FORGE_WORKER__POOL=<pool> consume them.
-- An operator sets the pool (POST/PATCH /v1/repositories); repositories registered before are in
-- `default`. A pool is a NATS subject token and a Kubernetes name part (forge.domain.messages).

ALTER TABLE repositories
    ADD COLUMN pool text NOT NULL DEFAULT 'default',
    ADD CONSTRAINT repositories_pool_name CHECK (
        pool ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$' AND length(pool) <= 32 AND pool <> 'deploy'
    );
