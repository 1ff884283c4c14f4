"""Issue 6 names the drift benchmark `bench/drift.py`; it lives in bench/comet.py. Same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("comet.py")), run_name="__main__")
