"""Routing over channels: priority, failover, automatic disabling and recovery."""

import openai
import pytest
from django.urls import reverse

from logs.models import ChannelMinute, RequestLog
from relay.health import channels_retest
from relay.models import Channel
from tests.fake_upstream import FakeUpstream
from tests.relay.conftest import make_channel, wait_until

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def second_upstream():
    fake = FakeUpstream(key="sk-second-secret").start()
    yield fake
    fake.stop()


def test_a_failing_channel_fails_over_and_is_taken_out_of_rotation(
    api, upstream, second_upstream, channel, settings
):
    settings.CHANNEL_FAILURE_THRESHOLD = 3
    Channel.objects.filter(pk=channel.pk).update(priority=10)  # tried first
    backup = make_channel(second_upstream, "backup", priority=0)
    upstream.behaviour["status"] = 503
    for _ in range(6):
        reply = api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert reply.choices[0].message.content == "Hello from upstream!"
    # The first three requests went to the failing channel first, then no more.
    assert len(upstream.received) == 3
    assert len(second_upstream.received) == 6
    failing = wait_until(
        lambda: Channel.objects.filter(pk=channel.pk, auto_disabled_at__isnull=False).first()
    )
    assert "3 failures in a row; last: HTTP 503" in failing.disabled_reason
    rows = wait_until(lambda: RequestLog.objects.count() == 6 and RequestLog.objects.all())
    assert [r.retries for r in rows.order_by("id")] == [1, 1, 1, 0, 0, 0]
    assert {r.channel_id for r in rows} == {backup.pk}

    # The health job tests it; still failing, it stays out.
    assert channels_retest() == 0
    # Once it answers again, the job puts it back and traffic returns to it.
    upstream.behaviour.clear()
    assert channels_retest() == 1
    wait_until(
        lambda: (
            api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            and len(upstream.received) > 5
        ),
        message="traffic back on the channel",
    )


def test_a_refused_channel_key_disables_the_channel_at_once(
    api, upstream, second_upstream, channel
):
    channel.set_key("sk-wrong-key")
    channel.priority = 10
    channel.save()
    make_channel(second_upstream, "backup")
    reply = api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert reply.choices
    disabled = wait_until(
        lambda: Channel.objects.filter(pk=channel.pk, auto_disabled_at__isnull=False).first()
    )
    assert "key was refused" in disabled.disabled_reason


def test_a_channel_out_of_credit_is_disabled_and_the_request_goes_elsewhere(
    api, upstream, second_upstream, channel
):
    """A 402 from a provider is our account there running dry, not the client's doing."""
    upstream.behaviour["status"] = 402
    channel.priority = 10
    channel.save()
    make_channel(second_upstream, "backup")
    reply = api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert reply.choices
    disabled = wait_until(
        lambda: Channel.objects.filter(pk=channel.pk, auto_disabled_at__isnull=False).first()
    )
    assert "no credit left" in disabled.disabled_reason


def test_retries_stop_at_the_configured_number_of_tries(api, upstream, channel, settings):
    settings.GATEWAY_MAX_TRIES = 2
    settings.CHANNEL_FAILURE_THRESHOLD = 100
    for index in range(3):
        fake = FakeUpstream(key=upstream.key).start()
        fake.behaviour["status"] = 500
        make_channel(fake, f"bad {index}", priority=5)
    upstream.behaviour["status"] = 500
    with pytest.raises(openai.InternalServerError) as raised:
        api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert "(2 tried)" in raised.value.body["message"]


def test_a_timeout_fails_over(api, upstream, second_upstream, channel):
    Channel.objects.filter(pk=channel.pk).update(priority=10, read_timeout=0.3)
    make_channel(second_upstream, "backup")
    upstream.behaviour["delay"] = 2
    reply = api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert reply.choices
    assert len(second_upstream.received) == 1


def test_equal_priorities_share_by_weight(api, upstream, second_upstream, channel):
    Channel.objects.filter(pk=channel.pk).update(weight=1)
    make_channel(second_upstream, "heavy", weight=9)
    for _ in range(60):
        api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert len(second_upstream.received) > 3 * len(upstream.received)
    assert upstream.received, "the light channel still gets some traffic"


def test_a_stream_is_never_retried_once_it_started(api, upstream, second_upstream, channel):
    Channel.objects.filter(pk=channel.pk).update(priority=10)
    make_channel(second_upstream, "backup")
    upstream.behaviour["break_stream"] = True
    chunks = []
    with pytest.raises(openai.APIError):
        for chunk in api.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True):
            chunks.append(chunk)
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "Hello from"
    assert not second_upstream.received
    row = wait_until(lambda: RequestLog.objects.first())
    assert (row.error_code, row.usage_estimated, row.completion_tokens) == (
        "stream_broken",
        True,
        2,
    )


def test_model_names_are_mapped_for_the_upstream(api, upstream, channel):
    Channel.objects.filter(pk=channel.pk).update(model_map={"gpt-4o-mini": "provider/mini-2024"})
    reply = api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert upstream.received[-1]["payload"]["model"] == "provider/mini-2024"
    assert reply.choices


def test_channel_traffic_is_counted_for_staff(api, upstream, channel, staff_client):
    api.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    wait_until(lambda: ChannelMinute.objects.filter(channel_id=channel.pk).exists())
    html = staff_client.get(reverse("admin:relay_channel_changelist")).content.decode()
    assert "in rotation" in html and "100.0%" in html


def test_staff_test_a_channel_now(staff_client, upstream, channel):
    response = staff_client.post(
        reverse("admin:relay_channel_changelist"),
        {"action": "test_now", "_selected_action": [channel.pk]},
        follow=True,
    )
    assert "Primary: answered in" in response.content.decode()
    channel.refresh_from_db()
    assert channel.last_test_ok and channel.last_test_latency_ms is not None
    assert upstream.received[-1]["payload"]["max_tokens"] == 1


def test_staff_never_see_a_channel_key(staff_client, upstream, channel):
    html = staff_client.get(
        reverse("admin:relay_channel_change", args=[channel.pk])
    ).content.decode()
    assert upstream.key not in html
    assert channel.key_encrypted not in html
    assert "Current key ends in …cret" in html
    assert (
        upstream.key.encode()
        not in Channel.objects.values_list("key_encrypted", flat=True)[0].encode()
    )
