from celery import shared_task

from billing.holds import holds_reap
from relay.health import channels_retest


@shared_task
def retest_channels() -> int:
    return channels_retest()


@shared_task
def reap_holds() -> int:
    return holds_reap()
