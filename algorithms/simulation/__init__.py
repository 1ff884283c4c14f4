"""Simulation engine: emitters, PSFs, cameras, multi-channel geometry, frame rendering and CRLB."""
