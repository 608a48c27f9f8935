"""A run, on the worker thread: plan the trading days, fetch them by the source's plan, end each day.

worker.py (the thread and the hand-over), syncer.py (one run), byday.py / bystock.py (the two
fetch plans), readahead.py (one day ahead of the writer), outcomes.py (how a day ends).
"""
