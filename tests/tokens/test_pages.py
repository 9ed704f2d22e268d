import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts.models import EmailDelivery
from billing.models import Line, LineGrant, ModelPrice
from tokens.models import Token
from tokens.services import token_create

KEY_RE = re.compile(r"sk-[0-9A-Za-z]{49}")


def create(client, **fields):
    data = {
        "name": "backend",
        "unlimited_quota": "on",
        "line": Line.objects.get(name="default").pk,
    }
    data.update(fields)
    return client.post(reverse("tokens:create"), data)


@pytest.fixture
def token(alice, default_line):
    return token_create(user=alice, name="backend", line=default_line)[0]


def test_the_create_form_starts_with_unlimited_quota_and_the_default_line(
    alice_client, default_line
):
    html = alice_client.get(reverse("tokens:create")).content.decode()
    assert (
        'name="unlimited_quota" id="id_unlimited_quota" data-hides="#quota-limit-row" checked'
        in html
    )
    assert "Quota and balance are independent" in html
    assert f'<option value="{default_line.pk}" selected>default — price ×1' in html


def test_a_new_key_is_shown_once_then_only_masked(alice_client, alice, default_line):
    response = create(alice_client)
    html = response.content.decode()
    key = KEY_RE.search(html).group(0)
    assert "it is shown only this once" in html
    assert f'api_key="{key}"' in html and f"Bearer {key}" in html
    token = Token.objects.get(user=alice)
    assert token.unlimited_quota and token.line == default_line
    listing = alice_client.get(reverse("tokens:list")).content.decode()
    assert key not in listing
    assert token.masked_key in listing


def test_creating_a_token_emails_a_security_notice_once(
    alice_client, alice, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        create(alice_client)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "A new API token “backend” was created"
    assert mail.outbox[0].to == [alice.email]
    delivery = EmailDelivery.objects.get()
    from tokens.tasks import send_token_notice

    token = Token.objects.get()
    stamp = int(delivery.key.rsplit(":", 1)[1])
    assert send_token_notice(token.pk, "created", stamp) is False  # a retried task sends nothing
    assert len(mail.outbox) == 1


def test_a_limited_token_with_models_and_an_ip_range(alice_client, alice, model_price):
    ModelPrice.objects.create(model="gpt-4o", vendor="OpenAI")
    response = create(
        alice_client,
        unlimited_quota="",
        quota_limit_usd="1",
        allowed_models=["gpt-4o-mini"],
        ip_allowlist="203.0.113.7\n10.0.0.0/8, 2001:db8::/32",
        expires_at=(timezone.localtime() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"),
    )
    assert response.status_code == 200
    token = Token.objects.get(user=alice)
    assert not token.unlimited_quota
    assert token.quota_limit == 1_000_000
    assert token.allowed_models == ["gpt-4o-mini"]
    assert token.ip_allowlist == ["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32"]
    assert token.expires_at > timezone.now()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "This field is required."),
        ({"name": "   "}, "This field is required."),
        ({"name": "x" * 101}, "Ensure this value has at most 100 characters"),
        (
            {"unlimited_quota": "", "quota_limit_usd": ""},
            "Set a limit in dollars, such as 5, or switch on unlimited quota.",
        ),
        ({"unlimited_quota": "", "quota_limit_usd": "0"}, "The amount must be more than zero."),
        ({"unlimited_quota": "", "quota_limit_usd": "-3"}, "The amount must be more than zero."),
        (
            {"unlimited_quota": "", "quota_limit_usd": "lots"},
            "Enter an amount in dollars, such as 20.",
        ),
        ({"expires_at": "2001-01-01T00:00"}, "The expiry must be in the future."),
        ({"ip_allowlist": "300.1.2.3"}, "“300.1.2.3” is not an IP address or CIDR range"),
        (
            {"ip_allowlist": "10.0.0.1/8"},
            "“10.0.0.1/8” has host bits set; did you mean 10.0.0.0/8?",
        ),
        ({"allowed_models": ["gpt-9"]}, "“gpt-9” is not a model we serve; pick from the list."),
    ],
)
def test_bad_input_gets_a_message_and_saves_nothing(alice_client, model_price, fields, message):
    response = create(alice_client, **fields)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Token.objects.exists()
    assert not mail.outbox


def test_a_line_without_a_grant_cannot_be_chosen(alice_client, alice):
    training = Line.objects.create(name="training", requires_grant=True)
    response = create(alice_client, line=training.pk)
    assert "Select a valid choice." in response.content.decode()
    LineGrant.objects.create(line=training, user=alice)
    response = create(alice_client, line=training.pk)
    assert Token.objects.get().line == training


def test_editing_keeps_the_key_and_applies_the_changes(alice_client, token):
    response = alice_client.post(
        reverse("tokens:edit", args=[token.pk]),
        {"name": "renamed", "quota_limit_usd": "2.50", "line": token.line_id, "ip_allowlist": ""},
    )
    assert response.status_code == 302
    edited = Token.objects.get()
    assert (edited.name, edited.unlimited_quota, edited.quota_limit) == (
        "renamed",
        False,
        2_500_000,
    )
    assert edited.key_hash == token.key_hash


def test_disabling_with_htmx_answers_with_the_row(alice_client, token):
    response = alice_client.post(
        reverse("tokens:toggle", args=[token.pk]), headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert html.strip().startswith(f'<tr id="token-{token.pk}">')
    assert "Disabled" in html and "Enable" in html
    assert not Token.objects.get().enabled
    response = alice_client.post(reverse("tokens:toggle", args=[token.pk]))
    assert response.status_code == 302
    assert Token.objects.get().enabled


def test_toggling_returns_to_the_page_it_came_from_and_never_off_site(alice_client, token):
    url = reverse("tokens:toggle", args=[token.pk])
    usage = reverse("logs:token", args=[token.pk])
    assert alice_client.post(url, {"next": usage}).url == usage
    for elsewhere in ["https://evil.example/", "//evil.example/", "javascript:alert(1)"]:
        assert alice_client.post(url, {"next": elsewhere}).url == reverse("tokens:list")


def test_rotating_shows_the_new_key_once(alice_client, token):
    html = alice_client.post(reverse("tokens:rotate", args=[token.pk])).content.decode()
    key = KEY_RE.search(html).group(0)
    assert "The old key stopped working." in html
    assert Token.objects.get().key_suffix == key[-4:]


def test_rotating_emails_a_security_notice(alice_client, token, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("tokens:rotate", args=[token.pk]))
    assert [m.subject for m in mail.outbox] == ["The key of your API token “backend” was rotated"]
    assert Token.objects.get().key_suffix in mail.outbox[0].body


def test_deleting_asks_first_then_hides_the_token(alice_client, token):
    page = alice_client.get(reverse("tokens:delete", args=[token.pk]))
    assert "This cannot be undone." in page.content.decode()
    assert Token.objects.alive().exists()
    response = alice_client.post(reverse("tokens:delete", args=[token.pk]))
    assert response.status_code == 302
    assert not Token.objects.alive().exists()
    assert Token.objects.get().deleted_at is not None
    assert alice_client.get(reverse("logs:token", args=[token.pk])).status_code == 404
    assert "No tokens yet" in alice_client.get(reverse("tokens:list")).content.decode()


@pytest.mark.parametrize(
    ("change", "label", "advice"),
    [
        ({"enabled": False}, "Disabled", "Enable it to use it again."),
        ({"expires_at": timezone.now() - timedelta(minutes=1)}, "Expired", "extend the expiry"),
        (
            {"unlimited_quota": False, "quota_limit": 1_000_000, "quota_used": 1_000_000},
            "Quota used up",
            "Raise the limit or set it to unlimited quota.",
        ),
    ],
)
def test_the_list_explains_why_a_token_does_not_work(alice_client, token, change, label, advice):
    Token.objects.filter(pk=token.pk).update(**change)
    html = alice_client.get(reverse("tokens:list")).content.decode()
    assert label in html and advice in html


def test_a_withdrawn_grant_is_explained(alice_client, alice):
    training = Line.objects.create(name="training", multiplier=Decimal(1), requires_grant=True)
    grant = LineGrant.objects.create(line=training, user=alice)
    token_create(user=alice, name="batch", line=training)
    grant.delete()
    html = alice_client.get(reverse("tokens:list")).content.decode()
    assert "Line not granted" in html and "needs a grant you no longer have" in html


TOKEN_URLS = [
    ("logs:token", "get"),
    ("tokens:edit", "get"),
    ("tokens:edit", "post"),
    ("tokens:toggle", "post"),
    ("tokens:rotate", "post"),
    ("tokens:delete", "get"),
    ("tokens:delete", "post"),
]


@pytest.mark.parametrize(("name", "method"), TOKEN_URLS)
def test_another_users_token_is_a_404_for_every_action(bob_client, token, name, method):
    response = getattr(bob_client, method)(reverse(name, args=[token.pk]))
    assert response.status_code == 404
    unchanged = Token.objects.get()
    assert (unchanged.enabled, unchanged.key_hash, unchanged.deleted_at) == (
        True,
        token.key_hash,
        None,
    )


def test_staff_see_tokens_masked_and_can_disable_them(staff_client, token):
    html = staff_client.get(reverse("admin:tokens_token_changelist")).content.decode()
    assert token.masked_key in html
    html = staff_client.get(reverse("admin:tokens_token_change", args=[token.pk])).content.decode()
    assert token.key_hash not in html
    staff_client.post(
        reverse("admin:tokens_token_changelist"),
        {"action": "disable", "_selected_action": [token.pk]},
    )
    assert not Token.objects.get().enabled


def test_the_old_address_of_a_token_page_still_lands_on_it(alice_client, token):
    response = alice_client.get(f"/tokens/{token.pk}/")
    assert response.status_code == 302
    assert response["Location"] == reverse("logs:token", args=[token.pk])
    assert alice_client.get(response["Location"]).status_code == 200
