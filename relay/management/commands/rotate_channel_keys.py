from django.core.management.base import BaseCommand, CommandError

from relay import crypto
from relay.models import Channel


class Command(BaseCommand):
    help = (
        "Re-encrypts every channel's upstream key under the current CHANNEL_KEY_SECRET (or "
        "SECRET_KEY). Run it after a rotation, while the old secret is still in "
        "CHANNEL_KEY_SECRET_FALLBACKS (or SECRET_KEY_FALLBACKS); then the old secret can go. "
        "Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check that every key is readable; change nothing.",
        )

    def handle(self, *args, dry_run, **options):
        moved, unreadable = 0, []
        for channel in Channel.objects.exclude(key_encrypted="").only(
            "pk", "name", "key_encrypted"
        ):
            try:
                fresh = crypto.reencrypt(channel.key_encrypted)
            except ValueError:
                unreadable.append(channel.name)
                continue
            # Only if nobody entered a new key meanwhile.
            if dry_run or Channel.objects.filter(
                pk=channel.pk, key_encrypted=channel.key_encrypted
            ).update(key_encrypted=fresh):
                moved += 1
        verb = "would be" if dry_run else "were"
        self.stdout.write(f"{moved} channel keys {verb} re-encrypted under the current secret.")
        if unreadable:
            raise CommandError(
                f"No configured secret reads the keys of: {', '.join(unreadable)}. Put the "
                "secret they were encrypted under in CHANNEL_KEY_SECRET_FALLBACKS, or enter "
                "those keys again in the admin."
            )
