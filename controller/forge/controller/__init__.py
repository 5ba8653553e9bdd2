"""Reconcile loops: runs to discovery, workflows, releases and deployments."""
