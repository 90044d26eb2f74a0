"""Benchmarks: the harness (child processes, peak memory) and one module per bench.
May import stack and every stage below it; only pipeline and cli sit above.
"""
