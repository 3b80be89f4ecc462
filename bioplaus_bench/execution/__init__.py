"""Running cells: training, executors, tuning, progress."""
