"""Hardware self-test of a worker (registry `diagnostics/1.0/selftest`)."""
