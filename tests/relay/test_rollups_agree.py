"""Rollups agree with the raw log after a mixed workload through the gateway."""

from collections import Counter, defaultdict
from datetime import timedelta

import openai
import pytest
from django.db.models import Sum
from django.utils import timezone

from logs import stats
from logs.models import IpDay, PlatformMinute, RequestLog, UsageDay, UsageHour, UsageMinute
from relay.models import Channel
from tests.fake_upstream import FakeUpstream
from tests.relay.conftest import make_channel, wait_until


def raw_totals(key):
    totals = defaultdict(Counter)
    for row in RequestLog.objects.all():
        minute = row.created_at.replace(second=0, microsecond=0)
        bucket = {"minute": minute, "hour": minute.replace(minute=0), "day": minute.date()}[key]
        slot = (bucket, row.user_id, row.token_id or 0, row.model, row.status < 400)
        totals[slot].update(
            requests=1, prompt=row.prompt_tokens, completion=row.completion_tokens, cost=row.cost
        )
    return totals


def rollup_totals(model):
    return {
        (r.bucket, r.user_id, r.token_id, r.model, r.ok): Counter(
            requests=r.requests,
            prompt=r.prompt_tokens,
            completion=r.completion_tokens,
            cost=r.cost,
        )
        for r in model.objects.all()
    }


def test_rollups_agree_with_the_log_after_a_mixed_workload(
    live_site, api, upstream, token_and_key, channel, settings, alice
):
    settings.CHANNEL_FAILURE_THRESHOLD = 1000
    backup = FakeUpstream(key=upstream.key).start()
    try:
        make_channel(backup, "backup")
        Channel.objects.filter(pk=channel.pk).update(priority=10)
        hello = [{"role": "user", "content": "Hello"}]
        for i in range(30):
            upstream.behaviour = {"status": 500} if i % 3 == 0 else {}  # retried on the backup
            if i % 5 == 0:
                list(api.chat.completions.create(model="gpt-4o-mini", messages=hello, stream=True))
            else:
                api.chat.completions.create(model="gpt-4o-mini", messages=hello)
        upstream.behaviour = {}
        api.embeddings.create(model="text-embedding-3-small", input="x")
        for _ in range(4):
            with pytest.raises(openai.NotFoundError):
                api.chat.completions.create(model="no-such-model", messages=hello)
        wait_until(lambda: RequestLog.objects.count() == 35, message="35 log rows")
        wait_until(lambda: (UsageMinute.objects.aggregate(n=Sum("requests"))["n"] or 0) == 35)
    finally:
        backup.stop()
    assert RequestLog.objects.filter(retries__gt=0).exists()
    assert rollup_totals(UsageMinute) == raw_totals("minute")
    assert rollup_totals(UsageHour) == raw_totals("hour")
    assert rollup_totals(UsageDay) == raw_totals("day")
    platform = PlatformMinute.objects.aggregate(n=Sum("requests"), c=Sum("cost"))
    assert (platform["n"], platform["c"]) == (35, RequestLog.objects.aggregate(c=Sum("cost"))["c"])
    assert IpDay.objects.aggregate(n=Sum("requests"))["n"] == 35
    per_token = stats.since(alice, timezone.now() - timedelta(hours=1))
    assert per_token.requests == 35 and per_token.errors == 4
