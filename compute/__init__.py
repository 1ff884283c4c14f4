"""Array backend: device selection, CuPy kernels and their NumPy/torch CPU twins."""
