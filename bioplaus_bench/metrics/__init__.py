"""Metrics computed by the core from any algorithm's proposed updates."""
