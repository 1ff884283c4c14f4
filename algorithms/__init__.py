"""The science of Locus: every registry entrypoint is a CLI module here. Free of Django and of the platform."""
