"""The plugin contract: the hooks a plugin module may implement (mark them with ``api.hookimpl``)."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("bioplaus_bench")


@hookspec
def bioplaus_bench_algorithms() -> list[type]:
    """Return the ``api.Algorithm`` subclasses this plugin provides.

    Called once when the suite loads its plugins. Each class's ``name`` must be unique across all
    plugins (built-in, entry point and ``--plugin`` files); a clash is an error naming both.
    """
