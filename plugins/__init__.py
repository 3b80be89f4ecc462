"""The built-in algorithms, installed as ``bioplaus_bench_plugins``.

Each module is written exactly like a third-party plugin: it imports only ``bioplaus_bench.api``
and is found through the ``bioplaus_bench.plugins`` entry-point group.
"""
