"""Typed specifications of a run, below the YAML layer."""
