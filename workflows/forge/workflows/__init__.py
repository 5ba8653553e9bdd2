"""Hera builders, the local workflow engine, the step container and the workers."""
