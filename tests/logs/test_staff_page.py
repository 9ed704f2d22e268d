from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from logs.models import ChannelMinute


def _minute(ago, channel_id, requests, failures, latency_ms):
    bucket = (timezone.now() - ago).replace(second=0, microsecond=0)
    ChannelMinute.objects.create(
        bucket=bucket,
        channel_id=channel_id,
        requests=requests,
        failures=failures,
        latency_ms=latency_ms,
    )


def test_the_platform_page_sums_the_channels_and_counts_those_that_failed(staff_client):
    _minute(timedelta(minutes=5), 1, requests=90, failures=0, latency_ms=90 * 200)
    _minute(timedelta(minutes=5), 2, requests=10, failures=10, latency_ms=10 * 1200)
    _minute(timedelta(hours=5), 2, requests=100, failures=0, latency_ms=100 * 300)
    html = staff_client.get(reverse("logs:staff")).content.decode()
    section = html[html.index('id="channels"') :]
    assert "Health per channel" in section
    assert reverse("admin:relay_channel_changelist") in section
    assert ">100<" in section and "200 in 24 h" in section  # requests: 1 h, 24 h
    assert ">10%<" in section and "5% in 24 h" in section  # errors
    assert ">300 ms<" in section  # latency over the hour: (18,000 + 12,000) / 100
    assert 'Failing (1 h)</div><div class="stat-value">1<' in section


def test_the_platform_page_says_when_no_channel_carried_traffic(staff_client):
    html = staff_client.get(reverse("logs:staff")).content.decode()
    assert "No traffic through any channel in the last 24 hours" in html


def test_the_channel_list_shows_each_channels_hour_and_day(staff_client):
    from relay.models import Channel

    channel = Channel.objects.create(name="east", base_url="http://127.0.0.1:9/v1")
    _minute(timedelta(minutes=5), channel.pk, requests=40, failures=4, latency_ms=40 * 100)
    _minute(timedelta(hours=5), channel.pk, requests=60, failures=0, latency_ms=60 * 100)
    html = staff_client.get(reverse("admin:relay_channel_changelist")).content.decode()
    assert "Requests (24 h)" in html and "Success (24 h)" in html
    assert ">40<" in html and ">100<" in html
    assert ">90.0%<" in html and ">96.0%<" in html
