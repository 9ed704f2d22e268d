from django.core.management.base import BaseCommand

from billing.services import price_adjustments_apply_due


class Command(BaseCommand):
    help = "Applies scheduled price adjustments whose time has come."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Report, change nothing.")

    def handle(self, *args, dry_run=False, **options):
        count = price_adjustments_apply_due(dry_run=dry_run)
        self.stdout.write(f"{'Would apply' if dry_run else 'Applied'} {count} adjustment(s).")
