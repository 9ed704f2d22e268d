"""Every staff action and every custom staff page needs a named permission.

The cases are generated from the admin site's registry: an action or a page added later is
tested here on its own, and fails if it declares no permission. Each is posted, as a real
request with the fields of its confirmation step, by a staff user who has every permission
but the one it needs and by a view-only staff user; neither may change anything."""

from decimal import Decimal

import pytest
from allauth.account.models import EmailAddress
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.options import ActionLocation
from django.contrib.auth import get_permission_codename
from django.contrib.auth.models import Group as StaffGroup
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from django.views.generic import RedirectView

from accounts.models import EmailDelivery, User
from billing import services
from billing.models import (
    Account,
    BillingSettings,
    BonusTier,
    Line,
    LineGrant,
    ModelPrice,
    PaymentEvent,
    PriceAdjustment,
    RechargeOrder,
    RedemptionCode,
    UnsettledUsage,
)
from console.announcements.models import Announcement
from console.support.models import Ticket
from logs.models import RequestLog
from relay.models import Channel
from tests.billing.test_orders import make_order
from tests.conftest import PASSWORD, balance_of, make_user, staff_client_for
from tokens.services import token_create

STANDARD_VIEWS = ("changelist", "add", "history", "delete", "change")
# What any action's confirmation step may ask: a missing check would really act.
CONFIRM_FIELDS = {
    "apply": "1",
    "post": "yes",
    "reason": "permission matrix",
    "amount": "1000",
    "force": "on",
    "note": "permission matrix",
}
# What any custom page's form may ask.
PAGE_FIELDS = {
    "name": "Permission matrix",
    "amount": "1000",
    "count": "2",
    "expires_at": "",
    "reason": "permission matrix",
    "usable_password": "true",
    "password1": "a-new-Passw0rd-for-you",
    "password2": "a-new-Passw0rd-for-you",
}
# Everything staff could change, compared before and after each refused request.
WATCHED_APPS = (
    "accounts",
    "billing",
    "tokens",
    "logs",
    "relay",
    "support",
    "announcements",
    "account",
    "mfa",
    "auth",
)


def _superuser_request():
    request = RequestFactory().get("/admin/")
    request.user = User(email="root@example.com", is_staff=True, is_superuser=True)
    return request


def _registry():
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def _actions():
    """Every action a superuser is offered, on change lists and on change forms."""
    request = _superuser_request()
    for model, model_admin in _registry():
        for location in ActionLocation:
            for name, action in model_admin.get_actions(request, location).items():
                yield model, name, action.func, location


def _custom_urls():
    for model, model_admin in _registry():
        opts = model._meta
        standard = {f"{opts.app_label}_{opts.model_name}_{view}" for view in STANDARD_VIEWS}
        for pattern in model_admin.get_urls():
            redirect = getattr(pattern.callback, "view_class", None) is RedirectView
            if pattern.name not in standard and not redirect:
                yield model, pattern


ACTIONS = [
    pytest.param(model, name, function, location, id=f"{model._meta.label_lower}:{name}:{where}")
    for model, name, function, location in _actions()
    for where in [location.value.lower().replace("_", "-")]
]
PAGES = [pytest.param(m, p, id=p.name) for m, p in _custom_urls()]


def needed_permissions(model, function):
    """The permissions an action's `allowed_permissions` stand for. A custom name is the
    codename of a permission of the model's app (has_<name>_permission checks exactly it)."""
    opts = model._meta
    needed = set()
    for name in function.allowed_permissions:
        if name in ("add", "change", "delete", "view"):
            needed.add(f"{opts.app_label}.{get_permission_codename(name, opts)}")
            if name == "view":  # change implies view in the admin
                needed.add(f"{opts.app_label}.{get_permission_codename('change', opts)}")
        else:
            needed.add(f"{opts.app_label}.{name}")
    return needed


def _perm(name):
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def _named(permissions):
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def staff_user(email, permissions):
    user = make_user(email)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    user.refresh_from_db()
    user.user_permissions.set(permissions)
    return user


def all_but(names):
    everything = Permission.objects.select_related("content_type")
    return [p for p in everything if f"{p.content_type.app_label}.{p.codename}" not in names]


def view_only():
    return list(Permission.objects.filter(codename__startswith="view_"))


def snapshot():
    """Every row of every table staff could change, as plain values."""
    tables = {}
    for app_label in WATCHED_APPS:
        for model in apps.get_app_config(app_label).get_models(include_auto_created=True):
            tables[model._meta.label] = list(model.objects.order_by("pk").values())
    return tables


@pytest.fixture
def root(db):
    return make_user("root@example.com", staff=True)


@pytest.fixture
def site_rows(root, alice, default_line, model_price):
    """At least one row for each admin, each in a state an action would change."""
    services.balance_adjust(user=alice, amount=50_000_000, staff_user=root, reason="start")
    LineGrant.objects.create(user=alice, line=default_line, granted_by=root)
    services.price_change(
        target=model_price,
        new_values={PriceAdjustment.Field.MODEL_MULTIPLIER: Decimal("0.1")},
        reason="upstream",
        staff_user=root,
        effective_at=timezone.now() + timezone.timedelta(days=1),
    )
    # Recorded before every price change was announced: one left for the publish action.
    PriceAdjustment.objects.create(
        model_price=model_price,
        field=PriceAdjustment.Field.COMPLETION_MULTIPLIER,
        old_value=model_price.completion_multiplier,
        new_value=Decimal(5),
        reason="upstream",
        batch="unannounced",
        staff_user=root,
    )
    BonusTier.objects.create(threshold=100_000_000, percent=5)
    BillingSettings.load()
    pending = make_order(alice, amount=30_000_000)
    credited = make_order(alice, amount=40_000_000)
    services.order_credit(order=credited, staff_user=root, reason="paid")
    PaymentEvent.objects.create(
        provider="sandbox", event_id="evt_1", order=pending, outcome="ignored"
    )
    services.redemption_batch_create(
        name="Launch", amount=5_000_000, count=2, expires_at=None, staff_user=root
    )
    UnsettledUsage.objects.create(
        owner="gateway-1", user=alice, requests=3, amount=1_000, error="refused"
    )
    token, _key = token_create(user=alice, name="ci", line=default_line, notify=False)
    channel = Channel(
        name="sim", type=Channel.Type.SIMULATOR, model_names=["gpt-4o-mini"], enabled=True
    )
    channel.set_key("sk-upstream-secret-0000")
    channel.save()
    channel.disable("kept failing")
    RequestLog.objects.create(
        id=RequestLog.id_floor(timezone.now()),
        created_at=timezone.now(),
        user=alice,
        token=token,
        endpoint="chat",
        status=200,
    )
    Announcement.objects.create(title="Draft", body="Soon.")
    EmailDelivery.objects.create(key="k1", recipient="alice@example.com", template="news")
    EmailAddress.objects.create(user=alice, email="alice@work.example.com", verified=False)
    # Newest rows nothing refers to, which a superuser may delete.
    ModelPrice.objects.create(model="spare-model", vendor="Spare")
    Line.objects.create(name="spare")
    Ticket.objects.create(
        number="T-MATRIX",
        user=alice,
        subject="Not credited",
        category=Ticket.Category.RECHARGE,
        order=pending,
        waiting_since=timezone.now(),
    )
    return {"pending": pending, "credited": credited, "channel": channel}


def post_action(client, model, name, location):
    """Runs the action, confirmation included, on every row; a deletion on the newest row
    (older ones are referred to by rows staff never delete), a change form's on its object."""
    opts = model._meta
    selected = list(model._default_manager.order_by("-pk").values_list("pk", flat=True))
    assert selected, f"no {opts.label} row to select: add one to site_rows"
    if name == "delete_selected":
        selected = selected[:1]
    if location == ActionLocation.CHANGE_LIST:
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        field = "action"
    else:
        selected = selected[:1]
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=selected)
        field = f"{location.value}-action"
    return client.post(url, {field: name, "_selected_action": selected, **CONFIRM_FIELDS})


def assert_refused(response, name):
    """403; or the admin's "No action selected." as the action is not among those offered;
    or, where the user is offered no action at all, the page again without it."""
    if response.status_code == 403:
        return
    if response.status_code == 200:
        action_form = response.context["action_form"]
        offered = dict(action_form.fields["action"].choices) if action_form else {}
        assert name not in offered, f"{name} was offered and answered 200"
        return
    assert response.status_code == 302, response.status_code
    told = [str(m) for m in get_messages(response.wsgi_request)]
    assert "No action selected." in told, told


def page_url(model, pattern):
    """The page's address, for the first row of its model where it takes an object."""
    pk = model._default_manager.values_list("pk", flat=True)[0]
    return reverse(f"admin:{pattern.name}", kwargs=dict.fromkeys(pattern.pattern.converters, pk))


# The registry declares


@pytest.mark.parametrize(("model", "name", "function", "location"), ACTIONS)
def test_every_action_declares_its_permissions(model, name, function, location):
    assert getattr(function, "allowed_permissions", None), (
        f"{model._meta.label} action {name!r} declares no allowed_permissions"
    )


@pytest.mark.parametrize(("model", "pattern"), PAGES)
def test_every_custom_page_declares_its_permissions(model, pattern):
    assert getattr(pattern.callback, "permission_required", None), (
        f"{pattern.name} checks no named permission: decorate it with "
        "console.lib.permissions.permission_required"
    )


def test_each_declared_permission_exists(db):
    names = {n for model, _, f, _ in _actions() for n in needed_permissions(model, f)}
    names |= {n for _, p in _custom_urls() for n in p.callback.permission_required}
    missing = names - _named(Permission.objects.select_related("content_type"))
    assert not missing, f"no such permission: {sorted(missing)}"


# The requests below act when a superuser sends them: a refusal is the permission's doing


def acted(response, before):
    download = "attachment" in response.get("Content-Disposition", "")
    return download or snapshot() != before


# Every user has an account, ledger and orders, which no one deletes in the admin.
UNDELETABLE = {"accounts.user:delete_selected"}


@pytest.mark.parametrize(("model", "name", "function", "location"), ACTIONS)
def test_an_action_as_posted_here_acts_for_a_superuser(
    site_rows, root, model, name, function, location
):
    client = staff_client_for(root)
    before = snapshot()
    response = post_action(client, model, name, location)
    if f"{model._meta.label_lower}:{name}" in UNDELETABLE:
        assert response.status_code in (200, 403) and snapshot() == before
    else:
        assert acted(response, before)


@pytest.mark.parametrize(("model", "pattern"), PAGES)
def test_a_custom_page_as_posted_here_acts_for_a_superuser(site_rows, root, model, pattern):
    client = staff_client_for(root)
    before = snapshot()
    assert acted(client.post(page_url(model, pattern), PAGE_FIELDS), before)


# Staff without the permission change nothing


@pytest.mark.parametrize(("model", "name", "function", "location"), ACTIONS)
def test_an_action_is_refused_to_staff_with_every_other_permission(
    site_rows, model, name, function, location
):
    nearly = staff_user("nearly@example.com", all_but(needed_permissions(model, function)))
    client = staff_client_for(nearly)
    before = snapshot()
    assert_refused(post_action(client, model, name, location), name)
    assert snapshot() == before


@pytest.mark.parametrize(("model", "name", "function", "location"), ACTIONS)
def test_an_action_is_refused_to_view_only_staff(site_rows, model, name, function, location):
    client = staff_client_for(staff_user("viewer@example.com", view_only()))
    before = snapshot()
    assert_refused(post_action(client, model, name, location), name)
    assert snapshot() == before


@pytest.mark.parametrize(("model", "pattern"), PAGES)
def test_a_custom_page_is_refused_to_staff_without_each_permission_it_needs(
    site_rows, model, pattern
):
    url = page_url(model, pattern)
    for needed in pattern.callback.permission_required:
        client = staff_client_for(staff_user(f"no-{needed}@example.com", all_but({needed})))
        before = snapshot()
        assert client.get(url).status_code == 403
        assert client.post(url, PAGE_FIELDS).status_code == 403
        assert snapshot() == before


@pytest.mark.parametrize(("model", "pattern"), PAGES)
def test_a_custom_page_is_refused_to_view_only_staff(site_rows, model, pattern):
    client = staff_client_for(staff_user("viewer@example.com", view_only()))
    url = page_url(model, pattern)
    before = snapshot()
    assert client.get(url).status_code == 403
    assert client.post(url, PAGE_FIELDS).status_code == 403
    assert snapshot() == before


# Staff with exactly the permission can act (so the matrix cannot pass by refusing all)


def finance_client(*names):
    return staff_client_for(staff_user("finance@example.com", [*view_only(), *map(_perm, names)]))


def run_action(client, model, name, **data):
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return client.post(url, {"action": name, "apply": "1", **data}, follow=True)


def test_staff_who_may_adjust_balances_can(site_rows, alice):
    client = finance_client("billing.adjust_balance")
    before = balance_of(alice)
    data = {"_selected_action": [alice.pk], "amount": "12.5", "reason": "goodwill"}
    run_action(client, Account, "adjust_balance", **data)
    assert balance_of(alice) == before + 12_500_000


@pytest.mark.parametrize(
    ("permission", "order", "action", "reason", "status"),
    [
        ("billing.credit_order", "pending", "credit_by_hand", "paid", "credited"),
        ("billing.refund_order", "credited", "refund", "dispute", "refunded"),
        ("billing.fail_order", "pending", "mark_failed", "fraud", "failed"),
    ],
)
def test_staff_who_may_act_on_orders_can(site_rows, permission, order, action, reason, status):
    client = finance_client(permission)
    order = site_rows[order]
    run_action(client, RechargeOrder, action, _selected_action=[order.pk], reason=reason)
    order.refresh_from_db()
    assert order.status == status


def test_staff_who_may_export_orders_can(site_rows):
    client = finance_client("billing.export_orders")
    url = reverse("admin:billing_rechargeorder_changelist")
    order = site_rows["pending"]
    response = client.post(url, {"action": "export_csv", "_selected_action": [order.pk]})
    assert response["Content-Type"] == "text/csv"


def test_staff_who_may_issue_codes_can(site_rows):
    client = finance_client("billing.issue_codes")
    before = RedemptionCode.objects.count()
    response = client.post(reverse("admin:billing_redemptionbatch_create"), PAGE_FIELDS)
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    assert RedemptionCode.objects.count() == before + 2


def test_staff_who_may_void_codes_can(site_rows):
    from billing.models import RedemptionBatch

    client = finance_client("billing.void_codes")
    batch = RedemptionBatch.objects.get()
    run_action(client, RedemptionBatch, "void_unused", _selected_action=[batch.pk])
    assert not RedemptionCode.objects.filter(voided=False).exists()


def test_staff_who_may_credit_orders_can_from_a_ticket(site_rows):
    client = finance_client("billing.credit_order")
    ticket = Ticket.objects.get()
    page = client.get(reverse("admin:support_ticket_change", args=[ticket.pk])).content.decode()
    url = reverse("admin:support_ticket_credit_order", args=[ticket.pk])
    assert url in page
    assert client.post(url, {"reason": "paid"}).status_code == 302
    site_rows["pending"].refresh_from_db()
    assert site_rows["pending"].status == RechargeOrder.Status.CREDITED


def test_the_credit_button_is_offered_only_to_staff_who_may_credit(site_rows):
    client = staff_client_for(staff_user("support@example.com", view_only()))
    ticket = Ticket.objects.get()
    page = client.get(reverse("admin:support_ticket_change", args=[ticket.pk])).content.decode()
    assert ticket.order.number in page
    assert reverse("admin:support_ticket_credit_order", args=[ticket.pk]) not in page


def test_staff_who_may_publish_prices_can(site_rows):
    client = finance_client("billing.publish_prices")
    adjustment = PriceAdjustment.objects.get(announcement__isnull=True)
    run_action(client, PriceAdjustment, "publish", _selected_action=[adjustment.pk], note="")
    adjustment.refresh_from_db()
    assert adjustment.announcement is not None


def test_staff_who_may_publish_announcements_can(site_rows):
    client = finance_client("announcements.publish_announcement")
    announcement = Announcement.objects.get(title="Draft")
    run_action(client, Announcement, "publish", _selected_action=[announcement.pk])
    announcement.refresh_from_db()
    assert announcement.published_at is not None


def _price_form(price, **changes):
    return {
        "model": price.model,
        "vendor": price.vendor,
        "kind": price.kind,
        "pricing": price.pricing,
        "model_multiplier": str(price.model_multiplier),
        "completion_multiplier": str(price.completion_multiplier),
        **{name: str(getattr(price, name)) for name in ModelPrice.PART_MULTIPLIERS},
        "call_price": str(price.call_price),
        "enabled": "on",
        "change_reason": "upstream costs",
        "change_effective_at": "",
        **changes,
    }


def test_staff_who_may_set_prices_can(model_price):
    client = finance_client(
        "billing.change_modelprice", "billing.set_prices", "billing.publish_prices"
    )
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    client.post(url, _price_form(model_price, model_multiplier="0.5"))
    model_price.refresh_from_db()
    assert model_price.model_multiplier == Decimal("0.5")


def test_a_price_stays_read_only_for_staff_who_may_edit_the_row_but_not_set_prices(model_price):
    client = staff_client_for(staff_user("ops@example.com", all_but({"billing.set_prices"})))
    url = reverse("admin:billing_modelprice_change", args=[model_price.pk])
    assert 'name="model_multiplier"' not in client.get(url).content.decode()
    # Nor what decides the price without being one: per call (at $0) or another model's row.
    client.post(
        url,
        _price_form(
            model_price,
            model_multiplier="0.5",
            vendor="Renamed",
            pricing="per_call",
            model="gpt-4o",
        ),
    )
    model_price.refresh_from_db()
    assert (model_price.vendor, model_price.model_multiplier) == ("Renamed", Decimal("0.075"))
    assert (model_price.model, model_price.pricing) == ("gpt-4o-mini", "tokens")
    assert not PriceAdjustment.objects.exists()
    assert client.get(reverse("admin:billing_modelprice_add")).status_code == 403


@pytest.mark.parametrize("held", [set(), {"billing.set_prices"}, {"billing.publish_prices"}])
def test_a_priced_row_is_deleted_only_by_staff_who_may_publish_its_price_changes(
    model_price, default_line, held
):
    # Deleted and added again, a model would start from new first prices, never announced.
    lacking = {"billing.set_prices", "billing.publish_prices"} - held
    client = staff_client_for(staff_user("ops@example.com", all_but(lacking)))
    for row in (model_price, default_line):
        opts = row._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[row.pk])
        assert client.get(url).status_code == 403
        assert client.post(url, {"post": "yes"}).status_code == 403
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        response = client.post(
            changelist, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
        )
        assert_refused(response, "delete_selected")
        assert type(row).objects.filter(pk=row.pk).exists()


def test_staff_who_may_publish_price_changes_may_delete_a_priced_row(model_price):
    client = finance_client(
        "billing.delete_modelprice", "billing.set_prices", "billing.publish_prices"
    )
    url = reverse("admin:billing_modelprice_delete", args=[model_price.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not ModelPrice.objects.filter(pk=model_price.pk).exists()


def test_only_superusers_give_staff_rights(alice):
    client = staff_client_for(staff_user("hr@example.com", all_but(set())))
    url = reverse("admin:accounts_user_change", args=[alice.pk])
    client.post(
        url,
        {
            "email": alice.email,
            "name": "Alice",
            "time_zone": alice.time_zone,
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "groups": [StaffGroup.objects.get(name="Finance").pk],
        },
    )
    alice.refresh_from_db()
    assert alice.name == "Alice"
    assert not (alice.is_staff or alice.is_superuser or alice.groups.exists())


def test_only_superusers_change_a_staff_account(charlie):
    # Its email (then a password reset) or its password would hand over the account itself.
    client = staff_client_for(staff_user("hr@example.com", all_but(set())))
    url = reverse("admin:accounts_user_change", args=[charlie.pk])
    client.post(
        url,
        {"email": "mallory@example.com", "name": "Charlie", "time_zone": charlie.time_zone},
    )
    password_url = reverse("admin:auth_user_password_change", args=[charlie.pk])
    response = client.post(
        password_url, {"password1": "a-new-password-1", "password2": "a-new-password-1"}
    )
    assert response.status_code == 403
    charlie.refresh_from_db()
    assert charlie.email == "charlie@example.com"
    assert charlie.check_password(PASSWORD)


def test_no_staff_user_takes_over_or_raises_a_staff_account_another_way(charlie):
    from allauth.mfa.models import Authenticator

    hr = staff_user("hr@example.com", all_but(set()))
    client = staff_client_for(hr)
    # An address of one's own, verified, on a superuser (a password reset would follow).
    address = EmailAddress.objects.get(user=charlie)
    client.post(
        reverse("admin:account_emailaddress_change", args=[address.pk]),
        {"user": charlie.pk, "email": "mallory@example.com", "verified": "on", "primary": "on"},
    )
    client.post(
        reverse("admin:account_emailaddress_add"),
        {"user": charlie.pk, "email": "mallory2@example.com", "verified": "on"},
    )
    assert list(EmailAddress.objects.filter(user=charlie).values_list("email", flat=True)) == [
        "charlie@example.com"
    ]
    # One's own authenticator moved onto the superuser.
    mine = Authenticator.objects.get(user=hr, type=Authenticator.Type.TOTP)
    client.post(
        reverse("admin:mfa_authenticator_change", args=[mine.pk]),
        {"user": charlie.pk, "type": "totp"},
    )
    assert Authenticator.objects.get(pk=mine.pk).user == hr
    # Permissions added to one's own group.
    finance = StaffGroup.objects.get(name="Finance")
    hr.groups.add(finance)
    every = list(Permission.objects.values_list("pk", flat=True))
    client.post(
        reverse("admin:auth_group_change", args=[finance.pk]),
        {"name": "Finance", "permissions": every},
    )
    assert finance.permissions.count() < len(every)


def test_no_one_reads_a_second_factor_secret_in_the_admin(root):
    from allauth.mfa.models import Authenticator

    client = staff_client_for(root)
    totp = Authenticator.objects.get(user=root)
    page = client.get(reverse("admin:mfa_authenticator_change", args=[totp.pk]))
    assert page.status_code == 200
    assert totp.data["secret"] not in page.content.decode()


# The staff platform page


def test_the_platform_page_needs_its_permission(alice_client):
    url = reverse("logs:staff")
    assert alice_client.get(url).status_code == 404
    viewer = staff_client_for(staff_user("viewer@example.com", all_but({"logs.view_platform"})))
    assert viewer.get(url).status_code == 403
    assert "Platform dashboard" not in viewer.get(reverse("console:dashboard")).content.decode()
    allowed = staff_client_for(staff_user("ops@example.com", [_perm("logs.view_platform")]))
    assert allowed.get(url).status_code == 200


def test_a_draft_announcement_shows_only_to_staff_who_may_view_announcements(db):
    draft = Announcement.objects.create(title="Next week", body="Soon.")
    url = reverse("console:announcement", args=[draft.pk])
    others = staff_user("other@example.com", all_but({"announcements.view_announcement"}))
    assert staff_client_for(others).get(url).status_code == 404
    viewer = staff_user("viewer@example.com", [_perm("announcements.view_announcement")])
    assert staff_client_for(viewer).get(url).status_code == 200


# Staff roles


ROLES = {
    "Support": {
        "accounts.view_user",
        "account.view_emailaddress",
        "billing.view_account",
        "billing.view_ledgerentry",
        "billing.view_rechargeorder",
        "billing.view_orderaction",
        "billing.view_paymentevent",
        "billing.view_line",
        "billing.view_linegrant",
        "billing.view_modelprice",
        "tokens.view_token",
        "logs.view_requestlog",
        "support.view_ticket",
        "support.change_ticket",
        "announcements.view_announcement",
    },
    "Finance": {
        "accounts.view_user",
        "billing.view_account",
        "billing.adjust_balance",
        "billing.view_ledgerentry",
        "billing.view_rechargeorder",
        "billing.credit_order",
        "billing.refund_order",
        "billing.fail_order",
        "billing.export_orders",
        "billing.view_orderaction",
        "billing.view_paymentevent",
        "billing.view_redemptionbatch",
        "billing.issue_codes",
        "billing.void_codes",
        "billing.view_bonustier",
        "billing.view_unsettledusage",
        "support.view_ticket",
    },
    "Operations": {
        "relay.view_channel",
        "relay.add_channel",
        "relay.change_channel",
        "billing.view_modelprice",
        "billing.add_modelprice",
        "billing.change_modelprice",
        "billing.view_line",
        "billing.add_line",
        "billing.change_line",
        "billing.view_linegrant",
        "billing.add_linegrant",
        "billing.change_linegrant",
        "billing.delete_linegrant",
        "billing.set_prices",
        "billing.view_priceadjustment",
        "billing.publish_prices",
        "billing.view_unsettledusage",
        "announcements.view_announcement",
        "announcements.add_announcement",
        "announcements.change_announcement",
        "announcements.publish_announcement",
        "accounts.view_emaildelivery",
        "logs.view_requestlog",
        "logs.view_platform",
    },
}
MONEY = {
    "billing.adjust_balance",
    "billing.credit_order",
    "billing.refund_order",
    "billing.issue_codes",
    "billing.void_codes",
    "billing.set_prices",
    "billing.publish_prices",
}


@pytest.mark.parametrize("name", ROLES)
def test_the_staff_roles_exist_with_their_permissions(db, name):
    group = StaffGroup.objects.get(name=name)
    assert _named(group.permissions.select_related("content_type")) == ROLES[name]


def test_support_moves_no_money(db):
    assert not ROLES["Support"] & MONEY
