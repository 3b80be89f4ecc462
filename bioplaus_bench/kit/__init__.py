"""The plugin author's kit: conformance checks and the new-plugin scaffold."""
