from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        # Validate the registry at start-up: a typo stops the process with file, key path and problem.
        import jobs.api.schema  # noqa: F401 - registers the OpenAPI auth extensions
        from jobs.registry import get_registry

        get_registry()
