"""The user API and the worker API (DRF), thin over `jobs.services`."""
