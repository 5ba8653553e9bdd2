"""Litestar REST API on PostgreSQL."""
