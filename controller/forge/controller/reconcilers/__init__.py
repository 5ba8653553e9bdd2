"""One reconciler per resource transition."""
