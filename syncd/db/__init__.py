"""Everything syncd reads from and writes to PostgreSQL, as plain functions over a connection.

connection.py (connecting through a transaction pooler), migrations.py, runs.py (sync_runs),
days.py (sync_days, read), daywrite.py (every write of a day: its bars and its record),
reference.py (calendar and stock list), staging.py (per-stock fetches), factors.py, checks.py,
runlock.py (the run lock and the write fence), views.py (adjusted and compatibility views),
partitions.py (daily_bars' layout), poolercheck.py (the lock connection is a real session).
Nothing here knows sockets, threads or sources' libraries.
"""
