"""syncctl: clients of syncd — the `syncctl` CLI, `SyncClient` for Python code, and an optional web router.

Importing this package pulls in pyzmq and msgspec only (never psycopg, pgserver or a source).
"""

from .client import SyncClient, SyncdBusy, SyncdError, SyncdProtocolError, SyncdRequestError, SyncdUnreachable

__all__ = ["SyncClient", "SyncdBusy", "SyncdError", "SyncdProtocolError", "SyncdRequestError", "SyncdUnreachable"]
