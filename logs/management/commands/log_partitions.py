from datetime import date

from django.core.management.base import BaseCommand, CommandError

from logs.partitions import DAYS_AHEAD, partitioned, partitions_make


class Command(BaseCommand):
    help = (
        "Makes the request log's day partitions (PostgreSQL) from --since, or today, to "
        f"{DAYS_AHEAD} days ahead, moving their rows out of the default partition. Periodic "
        "job make_log_partitions does the same for today on; --since is for history to import."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", type=date.fromisoformat, help="First day, YYYY-MM-DD.")
        parser.add_argument("--dry-run", action="store_true", help="Say what, make nothing.")

    def handle(self, *args, since=None, dry_run=False, **options):
        if not partitioned():
            raise CommandError("The request log is not partitioned here (PostgreSQL only).")
        made = partitions_make(first_day=since, dry_run=dry_run)
        verb = "would make" if dry_run else "made"
        for name, moved in made:
            self.stdout.write(f"{verb} {name}, {moved} rows from the default partition")
        self.stdout.write(f"{verb.capitalize()} {len(made)} partitions.")
