"""The registry as the portal sees it: loaded once per process from settings.LOCUS_REGISTRY_PATH."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from algorithms import registry


@cache
def get_registry() -> registry.Registry:
    try:
        return registry.load(settings.LOCUS_REGISTRY_PATH)
    except registry.RegistryError as exc:
        raise ImproperlyConfigured(f"algorithm registry: {exc}") from None
