"""The control plane: what the daemon's loop does with a request or a due job.

The ops (ops.py), the one way a run is admitted (admission.py), the loop's own database reads
(reads.py), the built-in schedule (scheduling.py), the run in flight as the loop sees it
(runstate.py), the judgement behind `verify` (verify.py), and who may talk to the socket
(curve.py). Nothing here syncs: runs are run/'s.
"""
