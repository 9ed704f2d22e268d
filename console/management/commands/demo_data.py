from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "try-the-demo"  # noqa: S105 (printed for the demo on purpose)
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-console"  # noqa: S105


class Command(BaseCommand):
    help = "Loads the demo user and a staff user. Safe to run again: nothing is duplicated."

    def handle(self, *args, **options):
        with transaction.atomic():
            _demo, demo_new = _user(DEMO_EMAIL, DEMO_PASSWORD, name="Demo User")
            _admin, admin_new = _user(ADMIN_EMAIL, ADMIN_PASSWORD, name="Staff", staff=True)
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(f"{settings.SITE_NAME} demo is ready at {settings.SITE_URL}")
        )
        self.stdout.write(f"  Demo login:  {DEMO_EMAIL} / {DEMO_PASSWORD}{_note(demo_new)}")
        self.stdout.write(
            f"  Admin login: {ADMIN_EMAIL} / {ADMIN_PASSWORD}{_note(admin_new)}"
            f"  ({settings.SITE_URL}/admin/)"
        )


def _user(email, password, *, name, staff=False):
    user, created = User.objects.get_or_create(
        email=email, defaults={"name": name, "is_staff": staff, "is_superuser": staff}
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
    EmailAddress.objects.update_or_create(
        user=user, email=email, defaults={"verified": True, "primary": True}
    )
    return user, created


def _note(created):
    return "" if created else " (unless you changed it)"
