"""What the daemon reports about itself: metrics, alerts, freshness, and the observer they listen on.

hub.py wires them (`Telemetry`), observer.py is the interface the working parts call,
metrics.py (Prometheus), alerts.py (webhooks), freshness.py (is the data fresh?), poller.py
(the thread that reads the database for them).
"""
