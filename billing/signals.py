from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import Signal, receiver

from billing.models import Account

# Staff publish price adjustments: sent with `adjustments` (PriceAdjustment rows not yet
# published), `staff_user` and `note`, inside the transaction that publishes them. The
# announcements app, above billing, answers: it announces them and links each to its
# announcement (PriceAdjustment.announcement). A receiver that fails undoes the publication.
price_adjustments_published = Signal()


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def create_account(sender, instance, created, raw=False, **kwargs):
    """Every user has an account from the start, so that its balance can be shown and held."""
    if created and not raw:
        Account.objects.get_or_create(user=instance)
