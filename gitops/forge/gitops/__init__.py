"""GitOps repository layout, ReleasePointers and environment config (arrives with the release issue)."""
