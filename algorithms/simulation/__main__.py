from algorithms.cli import run_main
from algorithms.simulation.cli import main

raise SystemExit(run_main(main))
