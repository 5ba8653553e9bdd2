"""Start real services (NATS, PostgreSQL, S3, git daemon) on free loopback ports for tests and ``forge dev up``."""
