"""`manage.py enrollment_token [--hours H] [--institution SLUG] [--pool SLUG ...]`: a one-time worker token."""

from django.core.management.base import BaseCommand, CommandError

from jobs.models import EnrollmentToken, Institution


class Command(BaseCommand):
    help = "Create a one-time enrollment token for a new worker and print it."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=float, default=24.0, help="validity (default 24 h)")
        parser.add_argument("--institution", help="slug of the institution the worker belongs to")
        parser.add_argument("--pool", action="append", default=[], help="private pool slug (repeatable)")
        parser.add_argument("--note", default="")

    def handle(self, *args, hours, institution, pool, note, **options):
        inst = None
        if institution:
            inst = Institution.objects.filter(slug=institution).first()
            if inst is None:
                raise CommandError(f"no institution with slug {institution!r}")
        _, raw = EnrollmentToken.issue(None, hours=hours, institution=inst, pools=pool, note=note)
        self.stdout.write(raw)
