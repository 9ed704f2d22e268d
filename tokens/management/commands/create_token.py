import argparse

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from billing.models import Line
from tokens.services import token_create


class Command(BaseCommand):
    help = "Creates an API token for a user and prints its key, once."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="The owner's email address.")
        parser.add_argument("--name", required=True, help="What the token is for.")
        parser.add_argument("--line", default="default", help="The line; default: default.")
        # The option's name before lines had one name, kept for the scripts that use it.
        parser.add_argument(
            "--group", dest="line", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        parser.add_argument("--quiet", action="store_true", help="Print the key alone.")

    def handle(self, *args, user, name, line, quiet=False, **options):
        owner = User.objects.filter(email__iexact=user).first()
        if owner is None:
            raise CommandError(f"No user with the email {user!r}.")
        found = Line.objects.filter(name=line).first()
        if found is None:
            names = ", ".join(Line.objects.values_list("name", flat=True))
            raise CommandError(f"No line named {line!r}. Lines: {names}.")
        if not found.is_available_to(owner):
            raise CommandError(f"{owner} has no grant for the line {line!r}.")
        token, key = token_create(user=owner, name=name, line=found)
        if quiet:
            self.stdout.write(key)
        else:
            self.stdout.write(f"Token {token.name!r} (id {token.pk}) for {owner}, line {found}:")
            self.stdout.write(key)
            self.stdout.write("The key is shown this once; it is stored only as a hash.")
