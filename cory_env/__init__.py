"""CORY environment package (filled in by the environment issue)."""
