from django.core.management.base import BaseCommand

from billing.services import orders_reconcile


class Command(BaseCommand):
    help = "Asks payment providers about pending orders and expires abandoned ones."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Report, change nothing.")

    def handle(self, *args, dry_run=False, **options):
        summary = orders_reconcile(dry_run=dry_run)
        prefix = "Would have: " if dry_run else ""
        self.stdout.write(
            f"{prefix}checked {summary['checked']}, credited {summary['credited']}, "
            f"failed {summary['failed']}, expired {summary['expired']}"
        )
