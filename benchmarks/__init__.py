"""inferline benchmarks stage (not built yet: see the open issues)."""
