"""Job use cases shared by the controller and the step container: dispatch and result look-up."""

from forge.jobs.dispatch import RESULTS_STREAM, dispatch, stored_result

__all__ = ["RESULTS_STREAM", "dispatch", "stored_result"]
