"""Benchmarks of Baton against the tools a user would otherwise pick, measured side by side.

``make bench`` runs ``python -m benchmarks.run --write BENCHMARKS.md``. Every section starts
its own servers on free loopback ports, measures Baton and its reference in the same run, and
stops every process it started by PID. See :mod:`benchmarks.run` for the options.
"""
