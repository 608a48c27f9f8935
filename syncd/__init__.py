"""syncd: the one process that syncs daily China A-share bars into PostgreSQL.

This package root only carries the version; importing it must stay cheap and must not pull
in psycopg, pgserver or any data-source library (syncctl imports `syncd.protocol`).
"""

__version__ = "0.1.0"
