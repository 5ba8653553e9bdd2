-- Rate limits shared by every API replica (issue 10's leftover; forge.adapters.postgres_limits): one
-- row per token bucket (a limit such as `runs`, and a key such as a token subject or a repository).
-- `full_at` is when the bucket is full again, in seconds since the epoch of the database's clock
-- (forge.ports.limits: GCRA's theoretical arrival time); a row with `full_at <= now` says the same as
-- no row, so full rows are purged. `admitted` is whether the row's last take got a token (the one
-- statement of a take answers with it). `key` is the SHA-256 of the caller's key: any string, fixed size.
--
-- UNLOGGED: a take writes no WAL (no fsync on the request's path); a crash or a failover to a standby
-- empties the table, i.e. every bucket is full again, the direction the API fails in anyway (it lets
-- requests through when this store is down). fillfactor 50: room for HOT updates (no indexed column
-- changes).

CREATE UNLOGGED TABLE rate_limit_buckets (
    limit_name text             NOT NULL CHECK (length(limit_name) BETWEEN 1 AND 64),
    key        bytea            NOT NULL CHECK (length(key) = 32),
    full_at    double precision NOT NULL,
    admitted   boolean          NOT NULL,
    PRIMARY KEY (limit_name, key)
) WITH (fillfactor = 50);
