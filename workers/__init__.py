"""Locus worker agent: runs portal jobs on this machine (design §1, docs/worker-api.md).

Free of Django on purpose: a lab PC or a donated GPU box needs only this package, `algorithms/`, celery and
requests. Nothing here imports torch or CuPy, so CUDA is initialised only in the job's own subprocess.
"""

__version__ = "0.1.0"
