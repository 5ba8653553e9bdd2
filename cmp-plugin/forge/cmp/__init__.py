"""Argo CD Config Management Plugin (arrives with the GitOps issue)."""
