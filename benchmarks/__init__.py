"""inferline benchmarks: `inferline bench run [--quick]` measures the stack against the alternatives."""
