from algorithms.cli import run_main
from algorithms.comet.run import main

raise SystemExit(run_main(main))
