"""The job engine: models, state machine, services, user and worker APIs, Celery tasks, registry cache."""
