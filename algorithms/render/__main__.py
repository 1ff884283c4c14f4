from algorithms.cli import run_main
from algorithms.render.cli import main

raise SystemExit(run_main(main))
