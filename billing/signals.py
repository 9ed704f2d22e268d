from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from billing.models import Account


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def create_account(sender, instance, created, raw=False, **kwargs):
    """Every user has an account from the start, so that its balance can be shown and held."""
    if created and not raw:
        Account.objects.get_or_create(user=instance)
