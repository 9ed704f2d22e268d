from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from billing.models import Line, LineGrant
from tokens.cache import publish_invalidation
from tokens.services import grants_changed


@receiver([post_save, post_delete], sender=LineGrant)
def grant_changed(sender, instance, **kwargs):
    grants_changed(user_ids=[instance.user_id])


@receiver(post_save, sender=Line)
def line_changed(sender, instance, created, **kwargs):
    """A line switched off or on, or re-priced: every cached token may be affected."""
    if not created:
        from django.db import transaction

        transaction.on_commit(lambda: publish_invalidation(everything=True))
