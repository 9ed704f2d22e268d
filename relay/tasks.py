from celery import shared_task

from billing.holds import holds_reap
from relay.health import channels_retest


@shared_task
def retest_channels():
    return channels_retest()


@shared_task
def reap_holds():
    return holds_reap()
