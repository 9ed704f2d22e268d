from django.conf import settings
from django.core.management.base import BaseCommand

from logs.writer import usage_fold
from relay.journal import replay_orphans


class Command(BaseCommand):
    help = (
        "Writes and charges what stopped gateway processes left in their journals, and releases "
        "their holds. Every gateway process does this on its own at start and every few "
        "seconds; run it where no gateway will start again (a machine taken out of service). "
        "Journals of running processes are left alone; safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--directory",
            default=str(settings.GATEWAY_JOURNAL_DIR),
            help="The journal folder (default: GATEWAY_JOURNAL_DIR).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count the request records that would be written; change nothing.",
        )

    def handle(self, *args, directory, dry_run, **options):
        written = replay_orphans(directory, dry_run=dry_run)
        if written and not dry_run:
            usage_fold()  # on the dashboards now, with no gateway left to fold them
        verb = "would be" if dry_run else "were"
        self.stdout.write(f"{written} request records {verb} written and charged from {directory}.")
