"""Refused requests cannot be used to fill the database: a key with no money, sending names of
models that do not exist, gets a bounded number of log rows a minute, every refusal is still
counted in the rollups, and no name it made up is stored."""

import secrets

import httpx
from django.db.models import Sum

from logs.models import PlatformMinute, RequestLog, UsageMinute
from relay.recording import UNKNOWN_MODEL
from tests.relay.conftest import wait_until
from tokens.services import token_create

ROWS_A_MINUTE = 5


def _counted(token):
    return UsageMinute.objects.filter(token_id=token.pk).aggregate(n=Sum("requests"))["n"] or 0


def test_a_flood_of_refusals_writes_a_bounded_number_of_rows(
    settings, live_site, alice, channel, default_line
):
    settings.GATEWAY_REFUSALS_LOGGED_PER_MINUTE = ROWS_A_MINUTE
    token, key = token_create(user=alice, name="empty", line=default_line, notify=False)
    made_up = [f"model-{secrets.token_hex(40)}" for _ in range(20)]
    with httpx.Client(base_url=f"{live_site.url}/v1", timeout=10) as http:
        headers = {"Authorization": f"Bearer {key}"}
        answers = [
            http.post(
                "/chat/completions",
                headers=headers,
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            )
            for model in [*made_up, *["gpt-4o-mini"] * 20]
        ]
    assert [a.status_code for a in answers] == [404] * 20 + [429] * 20
    assert all(a.headers["x-should-retry"] == "false" for a in answers)

    wait_until(lambda: _counted(token) == 40, message="every refusal counted in the rollups")
    rows = RequestLog.objects.filter(token_id=token.pk)
    # The run may straddle a minute: each minute has its own allowance.
    assert ROWS_A_MINUTE <= rows.count() <= 2 * ROWS_A_MINUTE
    stored = {
        *rows.values_list("model", flat=True),
        *UsageMinute.objects.values_list("model", flat=True),
        *PlatformMinute.objects.values_list("model", flat=True),
    }
    assert stored <= {UNKNOWN_MODEL, "gpt-4o-mini"}
    assert not any(name in str(stored) for name in made_up)


def test_requests_that_are_answered_are_always_logged(settings, api, token_and_key):
    settings.GATEWAY_REFUSALS_LOGGED_PER_MINUTE = 1
    token, _key = token_and_key
    for _ in range(5):
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    wait_until(
        lambda: RequestLog.objects.filter(token_id=token.pk, status=200).count() == 5,
        message="five answered requests logged",
    )
