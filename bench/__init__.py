"""syncd's benchmarks: `python -m bench [--quick]` from the repository root (see bench/README.md).

Each benchmark starts real syncd processes on a real PostgreSQL ($SYNCD_TEST_DSN, else an
embedded pgserver), prints a table and ends with one JSON line of ratios measured in that
same run: the machines we run on are shared and noisy, so ratios count, absolute times do
not. Nothing here is part of the pytest suite and nothing here asserts on time.
"""
