from datetime import timedelta
from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

from billing import services
from billing.models import Account, ModelPrice, PriceAdjustment, RechargeOrder, RedemptionCode
from tests.billing.test_orders import make_order
from tests.conftest import balance_of, ledger_sum, streamed


def run_action(client, model, action, ids, **data):
    url = reverse(f"admin:billing_{model}_changelist")
    return client.post(
        url, {"action": action, "_selected_action": ids, "apply": "1", **data}, follow=True
    )


def test_staff_find_late_orders_and_credit_one_by_hand(staff_client, alice):
    late = make_order(alice, created_at=timezone.now() - timedelta(minutes=20))
    make_order(alice)
    url = reverse("admin:billing_rechargeorder_changelist")
    html = staff_client.get(url, {"age": "late"}).content.decode()
    assert late.number in html and "late" in html
    assert late.number in staff_client.get(url, {"q": late.number}).content.decode()

    asked = staff_client.post(url, {"action": "credit_by_hand", "_selected_action": [late.pk]})
    assert "Credit by hand" in asked.content.decode() and "reason" in asked.content.decode()
    response = run_action(
        staff_client, "rechargeorder", "credit_by_hand", [late.pk], reason="paid, seen in Stripe"
    )
    assert "Credit by hand: 1 done." in response.content.decode()
    late.refresh_from_db()
    assert late.status == RechargeOrder.Status.CREDITED
    again = run_action(staff_client, "rechargeorder", "credit_by_hand", [late.pk], reason="twice")
    assert "already credited, nothing done" in again.content.decode()
    assert balance_of(alice) == 20_000_000 == ledger_sum(alice)


def test_an_admin_action_without_a_reason_does_nothing(staff_client, alice):
    order = make_order(alice)
    response = run_action(staff_client, "rechargeorder", "credit_by_hand", [order.pk], reason="")
    assert "This field is required." in response.content.decode()
    order.refresh_from_db()
    assert order.status == RechargeOrder.Status.PENDING


def test_staff_refund_an_order_and_are_told_when_the_balance_is_short(staff_client, alice):
    order = make_order(alice)
    services.order_credit(order=order)
    services.balance_charge(user=alice, amount=19_000_000, kind="usage")
    response = run_action(staff_client, "rechargeorder", "refund", [order.pk], reason="dispute")
    assert "below the $20.00 this order credited" in response.content.decode()
    response = run_action(
        staff_client, "rechargeorder", "refund", [order.pk], reason="dispute", force="on"
    )
    assert "Refund: 1 done." in response.content.decode()
    assert balance_of(alice) == 0 == ledger_sum(alice)


def test_staff_adjust_a_balance_with_a_reason(staff_client, alice, charlie):
    response = run_action(
        staff_client, "account", "adjust_balance", [alice.pk], amount="12.5", reason="promo"
    )
    assert "Adjust balance: 1 done." in response.content.decode()
    assert balance_of(alice) == 12_500_000
    entry = alice.account.entries.get()
    assert (entry.kind, entry.staff_user, entry.reason) == ("adjustment", charlie, "promo")
    response = run_action(
        staff_client, "account", "adjust_balance", [alice.pk], amount="-20", reason="x"
    )
    assert "does not cover $20.00" in response.content.decode()
    assert balance_of(alice) == 12_500_000


def test_the_balance_is_read_only_in_admin(staff_client, alice):
    url = reverse("admin:billing_account_change", args=[alice.pk])
    staff_client.post(url, {"balance": "999"})
    assert Account.objects.get(user=alice).balance == 0


def price_form(price, **changes):
    data = {
        "model": price.model,
        "vendor": price.vendor,
        "pricing": price.pricing,
        "kind": price.kind,
        "model_multiplier": str(price.model_multiplier),
        "completion_multiplier": str(price.completion_multiplier),
        **{name: str(getattr(price, name)) for name in ModelPrice.PART_MULTIPLIERS},
        "call_price": str(price.call_price),
        "enabled": "on",
        "change_reason": "",
        "change_effective_at": "",
    }
    data.update(changes)
    return data


def test_a_price_change_in_admin_needs_a_reason_and_is_recorded(staff_client, charlie, model_price):
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    response = staff_client.post(url, price_form(model_price, model_multiplier="0.1"))
    assert "Say why the price changes: it is published." in response.content.decode()
    model_price.refresh_from_db()
    assert model_price.model_multiplier == Decimal("0.075")

    staff_client.post(
        url,
        price_form(
            model_price,
            model_multiplier="0.1",
            completion_multiplier="5",
            change_reason="Upstream raised prices",
        ),
    )
    model_price.refresh_from_db()
    assert model_price.model_multiplier == Decimal("0.1")
    adjustments = PriceAdjustment.objects.order_by("field")
    assert [(a.field, a.old_value, a.new_value) for a in adjustments] == [
        ("completion_multiplier", Decimal(4), Decimal(5)),
        ("model_multiplier", Decimal("0.075"), Decimal("0.1")),
    ]
    assert len({a.batch for a in adjustments}) == 1
    assert all(a.applied_at and a.staff_user == charlie for a in adjustments)


def test_a_new_model_gets_its_vendors_cache_prices_unless_staff_set_them(staff_client):
    add = reverse("admin:billing_modelprice_add")
    cache_left_empty = dict.fromkeys(ModelPrice.vendor_cache_rates(""), "")
    form = {
        "kind": "chat",
        "pricing": "tokens",
        "model_multiplier": "1.5",
        "completion_multiplier": "5",
        "call_price": "0",
        "audio_input_multiplier": "1",
        "audio_output_multiplier": "1",
        "enabled": "on",
        **cache_left_empty,
    }
    staff_client.post(add, {**form, "model": "claude-x", "vendor": "Anthropic"})
    claude = ModelPrice.objects.get(model="claude-x")
    assert (claude.cache_read_multiplier, claude.cache_write_5m_multiplier) == (
        Decimal("0.1"),
        Decimal("1.25"),
    )
    assert claude.cache_write_1h_multiplier == 2
    own = {"model": "own-x", "vendor": "Anthropic", "cache_read_multiplier": "0.3"}
    staff_client.post(add, {**form, **own})
    assert ModelPrice.objects.get(model="own-x").cache_read_multiplier == Decimal("0.3")
    staff_client.post(add, {**form, "model": "unknown-x", "vendor": "Acme"})
    assert ModelPrice.objects.get(model="unknown-x").cache_read_multiplier == 1
    dear = {"model": "dear-x", "vendor": "Acme", "cache_read_multiplier": "1.5"}
    refused = staff_client.post(add, {**form, **dear})
    assert "less than or equal to 1" in refused.content.decode()
    assert not ModelPrice.objects.filter(model="dear-x").exists()


def test_a_scheduled_price_change_applies_when_its_time_comes(staff_client, model_price):
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    soon = timezone.localtime() + timedelta(hours=1)
    staff_client.post(
        url,
        price_form(
            model_price,
            model_multiplier="0.2",
            change_reason="planned",
            change_effective_at=soon.strftime("%Y-%m-%dT%H:%M"),
        ),
    )
    model_price.refresh_from_db()
    assert model_price.model_multiplier == Decimal("0.075")
    assert services.price_adjustments_apply_due() == 0
    assert services.price_adjustments_apply_due(now=soon + timedelta(minutes=1)) == 1
    assert services.price_adjustments_apply_due(now=soon + timedelta(minutes=2)) == 0
    model_price.refresh_from_db()
    assert model_price.model_multiplier == Decimal("0.2")


def test_editing_other_fields_records_no_adjustment(staff_client, model_price):
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    staff_client.post(url, price_form(model_price, vendor="OpenAI Inc."))
    assert ModelPrice.objects.get().vendor == "OpenAI Inc."
    assert not PriceAdjustment.objects.exists()


def test_a_line_multiplier_change_is_recorded(staff_client, default_line):
    url = reverse("admin:billing_line_change", args=[default_line.pk])
    staff_client.post(
        url,
        {
            "name": "default",
            "description": "",
            "multiplier": "1.1",
            "is_active": "on",
            "position": "0",
            "change_reason": "costs",
            "change_effective_at": "",
            "grants-TOTAL_FORMS": "0",
            "grants-INITIAL_FORMS": "0",
        },
    )
    default_line.refresh_from_db()
    assert default_line.multiplier == Decimal("1.1")
    assert PriceAdjustment.objects.get().field == "line_multiplier"


def test_orders_export_as_csv(staff_client, alice):
    order = make_order(alice)
    response = staff_client.post(
        reverse("admin:billing_rechargeorder_changelist"),
        {"action": "export_csv", "_selected_action": [order.pk]},
    )
    body = streamed(response).decode()
    assert body.splitlines()[0].startswith("number,email,amount_usd")
    assert f"{order.number},alice@example.com,20.00" in body


def test_staff_create_redemption_codes_and_get_them_once_as_csv(staff_client):
    response = staff_client.post(
        reverse("admin:billing_redemptionbatch_create"),
        {"name": "Launch", "amount": "5", "count": "3", "expires_at": ""},
    )
    lines = response.content.decode().splitlines()
    assert lines[0] == "code,amount_usd,batch,expires_at"
    assert len(lines) == 4
    code = lines[1].split(",")[0]
    stored = RedemptionCode.objects.get(hint=code[-4:])
    assert code not in stored.code_hash
    assert code.encode() not in b"".join(
        str(v).encode() for v in RedemptionCode.objects.values_list()
    )
