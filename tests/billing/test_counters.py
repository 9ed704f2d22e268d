"""Counters that the money code and the gateway change with F() updates are never written back
by a save(): a form, the admin or a service that loaded a row before they changed cannot
undo the change."""

import pytest
from django.apps import apps
from django.db.models import F
from django.utils import timezone

from accounts.models import NotificationSettings
from billing.models import Account, Hold
from console.lib.counters import CountersOutOfSave
from relay.models import Channel
from tokens.models import Token
from tokens.services import token_create

GUARDED = {model for model in apps.get_models() if issubclass(model, CountersOutOfSave)}


def test_every_model_the_gateway_or_settlement_writes_guards_its_counters():
    assert {Account, Hold, Token, Channel, NotificationSettings} <= GUARDED
    assert {"balance", "held", "total_recharged"} <= Account.COUNTERS
    assert {"quota_used", "quota_held", "last_used_at", "last_ip"} <= Token.COUNTERS
    assert {"auto_disabled_at", "last_error", "last_test_ok"} <= Channel.COUNTERS
    for model in GUARDED:
        names = {field.name for field in model._meta.concrete_fields}
        assert names >= model.COUNTERS, f"{model.__name__} names columns it does not have"


@pytest.fixture
def rows(alice, default_line):
    """One row of each guarded model the tests can load twice."""
    token = token_create(user=alice, name="t", line=default_line, notify=False)[0]
    return {
        Account: Account.objects.get(user=alice),
        Token: token,
        Channel: Channel.objects.create(name="c", base_url="https://example.com/v1"),
        NotificationSettings: NotificationSettings.of(alice),
        Hold: Hold.objects.create(owner="g", user=alice, amount=5, expires_at=timezone.now()),
    }


CHANGES = {
    Account: {"balance": F("balance") + 7, "held": F("held") + 3, "total_recharged": 9},
    Token: {"quota_used": 11, "quota_held": 2, "last_ip": "203.0.113.9"},
    Channel: {"last_error": "HTTP 500", "auto_disabled_at": timezone.now()},
    NotificationSettings: {"low_balance_alerted": True},
    Hold: {"amount": 50},
}


@pytest.mark.parametrize("model", sorted(CHANGES, key=lambda m: m.__name__))
def test_a_stale_save_leaves_the_counters_as_the_money_code_left_them(rows, model):
    stale = model.objects.get(pk=rows[model].pk)  # loaded by a form, say
    model.objects.filter(pk=stale.pk).update(**CHANGES[model])  # meanwhile, the gateway
    fresh = model.objects.filter(pk=stale.pk).values(*model.COUNTERS).get()
    stale.save()
    assert model.objects.filter(pk=stale.pk).values(*model.COUNTERS).get() == fresh


@pytest.mark.parametrize("model", sorted(CHANGES, key=lambda m: m.__name__))
def test_naming_a_counter_in_a_save_is_refused(rows, model):
    counter = sorted(model.COUNTERS)[0]
    with pytest.raises(ValueError, match="guarded updates"):
        rows[model].save(update_fields=[counter])


def test_a_new_row_is_created_with_its_counters(alice):
    Account.objects.filter(user=alice).delete()
    Account(user=alice, balance=0, held=0).save()
    assert Account.objects.filter(user=alice).exists()
