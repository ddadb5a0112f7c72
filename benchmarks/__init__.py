"""inferline benchmarks: `python -m benchmarks run [--quick]` measures the stack against the alternatives."""
