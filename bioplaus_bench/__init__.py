"""bioplaus-bench: a benchmark suite for biologically plausible credit-assignment algorithms."""

__version__ = "0.1.0"
