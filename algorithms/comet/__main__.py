import os

# The estimator's heavy work is element-wise numpy and sparse products; its dense algebra is on small
# (K × K) matrices. A threaded BLAS pool only spins against it on a busy machine (a 236 × 236
# Cholesky was seen taking 100 ms instead of 1 ms), so this process asks for one BLAS thread unless the
# caller chose otherwise. Set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from algorithms.cli import run_main  # noqa: E402
from algorithms.comet.run import main  # noqa: E402

raise SystemExit(run_main(main))
