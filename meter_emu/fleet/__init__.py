"""Many meters in one process, or one fleet over several: statistics and metrics (stats.py,
metrics.py), per-meter keys (keys.py), shards (shards.py) and the benchmark (bench.py)."""
