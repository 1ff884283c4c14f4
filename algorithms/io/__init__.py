"""File formats at the edge of the science: every unit/axis conversion happens here and nowhere else."""
