from django.dispatch import receiver

from billing.signals import price_adjustments_published
from console.announcements.services import price_adjustments_publish


@receiver(price_adjustments_published)
def announce_price_adjustments(sender, adjustments, staff_user, note="", **kwargs):
    """Staff published price adjustments in billing's admin: one announcement lists them."""
    return price_adjustments_publish(adjustments=adjustments, staff_user=staff_user, note=note)
