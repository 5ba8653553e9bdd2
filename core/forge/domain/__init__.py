"""Pure domain: pydantic models and logic, no I/O."""
