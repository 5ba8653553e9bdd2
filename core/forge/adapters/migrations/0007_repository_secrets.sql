-- Secrets by grant (issue 7): a repository's steps read only the secrets an operator granted it.
-- `secrets` holds the granted names (environment-variable names, upper case, at most 100); a step
-- naming any other secret fails before it starts. Repositories registered before have no grant.

ALTER TABLE repositories
    ADD COLUMN secrets text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT repositories_secrets_names CHECK (
        cardinality(secrets) <= 100
        AND array_position(secrets, NULL) IS NULL
        AND (cardinality(secrets) = 0 OR (array_to_string(secrets, ',') || ',') ~ '^([A-Z_][A-Z0-9_]*,)+$')
    );
