"""COMET-style drift correction: estimator, simulator and the `run` CLI (issue 6)."""
