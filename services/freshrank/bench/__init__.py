"""Benchmarks behind ``freshrank bench NAME``: each measures us and a peer in the same run.

A benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and reports
through ``freshrank.bench.report.BenchTable``.
"""
