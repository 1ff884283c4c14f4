from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate


def register_bundled_models(sender, plan=None, **kwargs) -> None:
    """After `migrate` (not after a test's flush, which sends no plan): the models shipped with Locus are in the
    model registry of every install, new or upgraded (jobs.trained_models.register_bundled)."""
    if plan is None or not settings.LOCUS_REGISTER_BUNDLED_MODELS:
        return
    from jobs.trained_models import register_bundled

    register_bundled()


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        # Validate the registry at start-up: a typo stops the process with file, key path and problem.
        import jobs.api.schema  # noqa: F401 - registers the OpenAPI auth extensions
        from jobs.registry import get_registry

        get_registry()
        post_migrate.connect(register_bundled_models, sender=self)
