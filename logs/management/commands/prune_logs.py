from django.core.management.base import BaseCommand

from logs.retention import prune


class Command(BaseCommand):
    help = (
        "Removes request logs (on PostgreSQL, days whole), IP records and rollups past their "
        "retention, in small batches."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args, dry_run=False, **options):
        for name, count in prune(dry_run=dry_run).items():
            verb = "would delete" if dry_run else "deleted"
            self.stdout.write(f"{name}: {verb} {count}")
