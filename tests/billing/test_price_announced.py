"""Every price change is announced: a model's or a line's multipliers and a call's price change
only by a price adjustment published in an announcement, and take effect with it (now or at
the announced time). No path writes a live price on its own: not the admin's form or actions,
not a shell's save() or update(), not a fixture or a seeding command."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format

from billing import services
from billing.models import Line, ModelPrice, PriceAdjustment, PriceChangeRefused
from billing.signals import price_adjustments_published
from console.announcements.models import Announcement
from console.announcements.signals import announce_price_adjustments
from tests.billing.test_admin import price_form
from tests.conftest import make_user, staff_client_for
from tests.security.test_admin_permissions import all_but, staff_user


def prices_of(price):
    return ModelPrice.objects.filter(pk=price.pk).values(*sorted(ModelPrice.PRICES)).get()


def announcements_page(client):
    return client.get(reverse("console:announcements")).content.decode()


def pricing_page(client, **params):
    return client.get(reverse("billing:pricing"), params).content.decode()


def change(price, when=None, **values):
    return services.price_change(
        target=price, new_values=values, reason="Upstream costs", staff_user=None, effective_at=when
    )


# The admin's form


def test_a_new_price_saved_in_admin_is_published_with_it(
    staff_client, client, model_price, default_line
):
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    response = staff_client.post(
        url,
        price_form(model_price, model_multiplier="0.1", change_reason="Upstream raised prices"),
        follow=True,
    )
    announcement = Announcement.objects.get()
    assert "Price change of gpt-4o-mini published in" in response.content.decode()
    assert announcement.is_published and announcement.kind == Announcement.Kind.PRICE
    assert "Upstream raised prices" in announcement.body_html
    assert PriceAdjustment.objects.get().announcement == announcement
    # What the issue saw: the pricing page at $0.20 while Announcements had nothing.
    assert "$0.20" in pricing_page(client)
    assert announcement.title in announcements_page(client)


def test_the_admin_form_changes_no_price_without_a_reason(staff_client, model_price):
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    response = staff_client.post(url, price_form(model_price, model_multiplier="0.1"))
    assert "Say why the price changes: it is published." in response.content.decode()
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    assert not Announcement.objects.exists() and not PriceAdjustment.objects.exists()


def test_the_admin_form_refuses_a_time_that_has_passed(staff_client, model_price):
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    past = timezone.localtime() - timedelta(days=1)
    response = staff_client.post(
        url,
        price_form(
            model_price,
            model_multiplier="0.1",
            change_reason="late",
            change_effective_at=past.strftime("%Y-%m-%dT%H:%M"),
        ),
    )
    assert "That time has passed" in response.content.decode()
    assert not PriceAdjustment.objects.exists()


def test_a_line_multiplier_saved_in_admin_is_published_with_it(staff_client, default_line):
    staff_client.post(
        reverse("admin:billing_line_change", args=[default_line.pk]),
        {
            "name": "default",
            "description": "",
            "multiplier": "1.2",
            "is_active": "on",
            "position": "0",
            "change_reason": "Dearer upstream",
            "change_effective_at": "",
            "grants-TOTAL_FORMS": "0",
            "grants-INITIAL_FORMS": "0",
        },
    )
    default_line.refresh_from_db()
    assert default_line.multiplier == Decimal("1.2")
    assert "Line **default**: line multiplier 1 → 1.2" in Announcement.objects.get().body


def test_staff_who_may_set_but_not_publish_prices_see_them_read_only(model_price):
    client = staff_client_for(staff_user("ops@example.com", all_but({"billing.publish_prices"})))
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    page = client.get(url).content.decode()
    assert 'name="model_multiplier"' not in page and 'name="change_reason"' not in page
    client.post(url, price_form(model_price, model_multiplier="0.5", change_reason="x"))
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    assert not PriceAdjustment.objects.exists()


def test_a_new_model_is_no_price_change_and_is_not_announced(staff_client):
    form = {
        "model": "gpt-new",
        "vendor": "OpenAI",
        "kind": "chat",
        "pricing": "tokens",
        "model_multiplier": "1",
        "completion_multiplier": "4",
        "call_price": "0",
        "audio_input_multiplier": "1",
        "audio_output_multiplier": "1",
        "enabled": "on",
        **dict.fromkeys(ModelPrice.vendor_cache_rates(""), ""),
    }
    page = staff_client.get(reverse("admin:billing_modelprice_add")).content.decode()
    assert 'name="change_reason"' not in page
    staff_client.post(reverse("admin:billing_modelprice_add"), form)
    assert ModelPrice.objects.get(model="gpt-new").model_multiplier == 1
    assert not Announcement.objects.exists() and not PriceAdjustment.objects.exists()


def test_the_change_form_shows_the_changes_announced_for_later(staff_client, model_price):
    change(model_price, timezone.now() + timedelta(days=3), model_multiplier=Decimal("0.1"))
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    page = staff_client.get(url).content.decode()
    assert "Model multiplier: 0.075 → 0.1 from" in page
    assert Announcement.objects.get().get_absolute_url() in page


# A call's price, in dollars


@pytest.fixture
def dall_e(db):
    return ModelPrice.objects.create(
        model="dall-e-3", vendor="OpenAI", kind="image", pricing="per_call", call_price=40_000
    )


def test_a_calls_price_is_shown_and_typed_in_dollars(staff_client, dall_e):
    url = reverse("admin:billing_modelprice_change", args=[dall_e.pk])
    assert 'name="call_price" value="0.04"' in staff_client.get(url).content.decode()
    staff_client.post(url, price_form(dall_e, call_price="$0.0825", change_reason="HD images"))
    assert prices_of(dall_e)["call_price"] == 82_500
    adjustment = PriceAdjustment.objects.get()
    assert (adjustment.old_value, adjustment.new_value) == (40_000, 82_500)
    assert "$0.04 → $0.0825" in Announcement.objects.get().body


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("0.0000001", "at most six decimals"),
        ("-1", "cannot be below zero"),
        ("four cents", "Enter a price in dollars"),
    ],
)
def test_a_calls_price_that_is_not_dollars_is_refused(staff_client, dall_e, typed, error):
    url = reverse("admin:billing_modelprice_change", args=[dall_e.pk])
    response = staff_client.post(url, price_form(dall_e, call_price=typed, change_reason="x"))
    assert error in response.content.decode()
    assert prices_of(dall_e)["call_price"] == 40_000


def test_a_model_switched_to_per_call_in_admin_stays_priced_per_token(staff_client, model_price):
    """Per call with no call price would make every request free at once: how a model is
    priced, and which model a row prices, are fixed once the row exists."""
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    staff_client.post(
        url, price_form(model_price, pricing="per_call", model="gpt-4o", change_reason="x")
    )
    model_price.refresh_from_db()
    assert (model_price.model, model_price.pricing) == ("gpt-4o-mini", "tokens")
    assert not PriceAdjustment.objects.exists()


def test_a_shell_cannot_switch_a_model_to_per_call_or_rename_it(model_price):
    for field, value in (("pricing", "per_call"), ("model", "gpt-4o")):
        price = ModelPrice.objects.get(pk=model_price.pk)
        setattr(price, field, value)
        with pytest.raises(PriceChangeRefused):
            price.save()
        with pytest.raises(PriceChangeRefused):
            ModelPrice.objects.filter(pk=price.pk).update(**{field: value})
    assert ModelPrice.objects.get(pk=model_price.pk).pricing == "tokens"


# The admin's actions and lists


def test_no_admin_action_or_list_changes_a_price(staff_client, model_price, default_line):
    """Every action offered on models' and lines' prices, posted with a new price and its
    confirmation, leaves the prices of the rows it keeps as they were."""
    spare = ModelPrice.objects.create(model="spare", vendor="Spare")
    before = {p.pk: prices_of(p) for p in (model_price, spare)}
    line_before = default_line.multiplier
    request = RequestFactory().get("/admin/")
    request.user = make_user("root@example.com", staff=True)
    for model in (ModelPrice, Line):
        model_admin = admin.site._registry[model]
        assert not model_admin.list_editable
        for name in model_admin.get_actions(request):
            staff_client.post(
                reverse(f"admin:billing_{model._meta.model_name}_changelist"),
                {
                    "action": name,
                    "_selected_action": [spare.pk] if model is ModelPrice else [],
                    "post": "yes",
                    "apply": "1",
                    "model_multiplier": "9",
                    "multiplier": "9",
                    "change_reason": "x",
                },
            )
    for price in ModelPrice.objects.filter(pk__in=before):
        assert prices_of(price) == before[price.pk]
    default_line.refresh_from_db()
    assert default_line.multiplier == line_before
    assert not PriceAdjustment.objects.exists()


# The service


def test_the_service_publishes_and_applies_a_change_now(client, model_price):
    adjustments = change(model_price, model_multiplier=Decimal("0.1"))
    assert adjustments[0].announcement.is_published and adjustments[0].applied_at
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.1")
    assert adjustments[0].announcement.title in announcements_page(client)


def test_the_service_sets_the_multipliers_of_the_parts_of_a_usage(model_price):
    change(model_price, cache_read_multiplier="0.5", audio_output_multiplier="2")
    assert prices_of(model_price)["cache_read_multiplier"] == Decimal("0.5")
    assert prices_of(model_price)["audio_output_multiplier"] == 2
    assert "cached input $0.15 → $0.075 per 1M tokens" in Announcement.objects.get().body


def test_a_price_changes_nowhere_when_nothing_can_announce_it(model_price):
    # As if the announcements app were not installed: no receiver publishes the change.
    price_adjustments_published.disconnect(announce_price_adjustments)
    try:
        with pytest.raises(services.BillingError, match="Nothing published"):
            change(model_price, model_multiplier=Decimal("0.1"))
    finally:
        price_adjustments_published.connect(announce_price_adjustments)
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    assert not PriceAdjustment.objects.exists()


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"model_multiplier": "-1"}, "not below zero"),
        ({"cache_read_multiplier": "1.5"}, "at most 1"),
        ({"call_price": "0.5"}, "whole number of micro-dollars"),
        ({"line_multiplier": "2"}, "has no line multiplier"),
        ({"vendor": "x"}, "is not a price"),
    ],
)
def test_the_service_refuses_what_is_no_price(model_price, values, error):
    with pytest.raises(services.BillingError, match=error):
        change(model_price, **values)
    assert not PriceAdjustment.objects.exists() and not Announcement.objects.exists()


# A shell


def test_saving_a_new_price_from_a_shell_is_refused(model_price, default_line):
    price = ModelPrice.objects.get(pk=model_price.pk)
    price.model_multiplier = 2
    with pytest.raises(PriceChangeRefused, match="announced price adjustment"):
        price.save()
    line = Line.objects.get(pk=default_line.pk)
    line.multiplier = Decimal(2)
    with pytest.raises(PriceChangeRefused):
        line.save()
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    assert Line.objects.get(pk=default_line.pk).multiplier == 1


def test_every_other_way_a_shell_writes_a_price_is_refused(model_price):
    fresh = ModelPrice.objects.create(model="x", vendor="Y")  # saved, never read back
    fresh.call_price = 5
    by_hand = ModelPrice(pk=model_price.pk, model="gpt-4o-mini", vendor="OpenAI")  # multiplier 1
    attempts = [
        lambda: ModelPrice.objects.filter(pk=model_price.pk).update(model_multiplier=2),
        lambda: Line.objects.update(multiplier=2),
        lambda: ModelPrice.objects.bulk_update([fresh], ["call_price"]),
        lambda: ModelPrice.objects.update_or_create(
            model="gpt-4o-mini", defaults={"completion_multiplier": 9}
        ),
        fresh.save,
        by_hand.save,
    ]
    for attempt in attempts:
        with pytest.raises(PriceChangeRefused), transaction.atomic():
            attempt()
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    assert prices_of(fresh)["call_price"] == 0


def test_a_row_read_before_a_change_applied_never_writes_the_old_price_back(model_price):
    stale = ModelPrice.objects.get(pk=model_price.pk)
    change(model_price, model_multiplier=Decimal("0.1"))
    stale.vendor = "OpenAI Inc."
    stale.save()
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.1")
    assert ModelPrice.objects.get(pk=model_price.pk).vendor == "OpenAI Inc."


# Imports


def test_a_fixture_may_add_a_model_but_not_change_a_price(model_price, tmp_path):
    def fixture(pk, model, multiplier):
        row = {
            "model": model,
            "vendor": "OpenAI",
            "model_multiplier": multiplier,
            "updated_at": "2025-01-01T00:00:00Z",
        }
        return [{"model": "billing.modelprice", "pk": pk, "fields": row}]

    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(fixture(model_price.pk, "gpt-4o-mini", "2")))
    with pytest.raises((PriceChangeRefused, CommandError)):
        call_command("loaddata", str(changed), verbosity=0)
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    added = tmp_path / "added.json"
    added.write_text(json.dumps(fixture(model_price.pk + 100, "gpt-added", "2")))
    call_command("loaddata", str(added), verbosity=0)
    assert ModelPrice.objects.get(model="gpt-added").model_multiplier == 2


def test_seeding_the_demo_data_adds_models_and_changes_no_price(db):
    ModelPrice.objects.create(model="gpt-4o-mini", vendor="OpenAI", model_multiplier=9)
    call_command("demo_data", verbosity=0)
    assert ModelPrice.objects.get(model="gpt-4o-mini").model_multiplier == 9
    assert ModelPrice.objects.count() > 1
    assert not PriceAdjustment.objects.exists()


# Scheduled changes


def test_a_scheduled_change_applies_at_its_time_with_its_announcement_public(client, model_price):
    when = timezone.now() + timedelta(days=3)
    adjustment = change(model_price, when, model_multiplier=Decimal("0.1"))[0]
    assert adjustment.announcement.title in announcements_page(client)
    assert "These prices change on" in adjustment.announcement.body_html
    assert services.price_adjustments_apply_due() == 0
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    call_command("apply_price_adjustments", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")
    assert services.price_adjustments_apply_due(now=when + timedelta(minutes=1)) == 1
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.1")


def test_a_change_whose_announcement_is_withdrawn_does_not_apply(model_price):
    when = timezone.now() + timedelta(hours=1)
    adjustment = change(model_price, when, model_multiplier=Decimal("0.1"))[0]
    Announcement.objects.filter(pk=adjustment.announcement_id).update(published_at=None)
    assert services.price_adjustments_apply_due(now=when + timedelta(minutes=1)) == 0
    adjustment.announcement.delete()
    assert services.price_adjustments_apply_due(now=when + timedelta(minutes=1)) == 0
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")


def test_an_adjustment_no_announcement_published_never_applies(model_price):
    PriceAdjustment.objects.create(
        model_price=model_price,
        field="model_multiplier",
        old_value=Decimal("0.075"),
        new_value=Decimal(2),
        effective_at=timezone.now() - timedelta(hours=1),
        reason="written by hand",
        batch="shell",
    )
    assert services.price_adjustments_apply_due() == 0
    call_command("apply_price_adjustments", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert prices_of(model_price)["model_multiplier"] == Decimal("0.075")


# The pricing page


def test_the_pricing_page_shows_an_announced_change_next_to_the_price(
    client, model_price, default_line
):
    when = timezone.now() + timedelta(days=3)
    change(model_price, when, model_multiplier=Decimal("0.1"))
    day = date_format(timezone.localtime(when), "j M")
    html = pricing_page(client)
    assert "$0.15" in html  # today's input price per 1M
    assert "from <time datetime=" in html
    assert f">{day}</time>" in html and ": $0.20</small>" in html  # input from then: 0.1 × $2
    assert ": $1.20</small>" not in html
    fragment = client.get(reverse("billing:pricing"), headers={"HX-Request": "true"})
    assert ": $0.20</small>" in fragment.content.decode()


def test_the_pricing_page_shows_a_lines_announced_change_on_every_model(
    client, model_price, default_line
):
    change_line = services.price_change(
        target=default_line,
        new_values={"line_multiplier": Decimal(2)},
        reason="Dearer line",
        staff_user=None,
        effective_at=timezone.now() + timedelta(days=1),
    )
    assert change_line
    html = pricing_page(client, line="default")
    assert ": $0.30</small>" in html  # input: 0.075 × 2 × $2
    assert ": $1.20</small>" in html  # output: 0.075 × 4 × 2 × $2


def test_the_pricing_page_shows_a_calls_announced_price(client, dall_e, default_line):
    change(dall_e, timezone.now() + timedelta(days=2), call_price=50_000)
    html = pricing_page(client)
    assert "$0.04 per call" in html and ": $0.05</small>" in html
