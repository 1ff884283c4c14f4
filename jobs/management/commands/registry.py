"""`manage.py registry check [--file PATH]`: validate the algorithm registry; `registry list`: show it."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from algorithms import registry


class Command(BaseCommand):
    help = "Validate (check) or list the algorithm registry."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["check", "list"])
        parser.add_argument("--file", help="registry file (default: the configured one)")

    def handle(self, *args, action, file=None, **options):
        try:
            reg = registry.load(file or settings.LOCUS_REGISTRY_PATH)
        except registry.RegistryError as exc:
            raise CommandError(str(exc)) from None
        entries = reg.entrypoints()
        if action == "list":
            for e in entries:
                queue = f"{e.queue}|cpu" if e.cpu_route else e.queue  # |cpu: it also runs on a CPU (cpu_route)
                self.stdout.write(f"{e.key:40} {queue:12} timeout {e.timeout_s:>6} s  {e.summary}")
        self.stdout.write(self.style.SUCCESS(f"{reg.path}: {len(entries)} entrypoint(s) OK"))
