"""The Python client of a Locus portal (`Locus`) and its `locus` command (`locus_client.cli`).

Free of Django and of the science packages on purpose: it needs only `requests`, so it installs on its own
(`pip install ./client`) wherever a user works. The worker agent shares its HTTP retry policy
(`locus_client.retry`).
"""

from locus_client.api import TERMINAL, Locus, LocusError

__all__ = ["TERMINAL", "Locus", "LocusError"]
__version__ = "0.1.0"
