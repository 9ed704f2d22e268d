import logging

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing import services
from billing.forms import AmountField, LedgerFilterForm, RechargeForm, RedeemForm
from billing.models import BillingSettings, BonusTier, Line, ModelPrice, RechargeOrder
from billing.providers import (
    PROVIDERS,
    InvalidSignature,
    SandboxProvider,
    enabled_providers,
    get_provider,
)
from console.lib.money import format_usd
from console.lib.pagination import keyset_page
from console.lib.params import text_param
from console.lib.ratelimit import limit_reached

log = logging.getLogger(__name__)


def _get_order_for_user(request, number):
    if text_param(number, max_length=24) is None:
        raise Http404("No such order.")
    return get_object_or_404(RechargeOrder, number=number, user=request.user)


@login_required
def balance(request):
    account = services.account_for(request.user)
    filters = LedgerFilterForm(request.GET or None)
    entries = account.entries.select_related("order", "redemption_code")
    kind = filters.cleaned_data["kind"] if filters.is_valid() else ""
    if kind:
        entries = entries.filter(kind=kind)
    page = keyset_page(entries, request.GET.get("after"), size=50)
    context = {"account": account, "page": page, "filters": filters, "kind": kind}
    if request.htmx and request.GET.get("after"):
        return render(request, "billing/balance.html#ledger-rows", context)
    now = timezone.localtime()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    context["spent_this_month"] = services.spend_between(request.user, month_start, now)
    return render(request, "billing/balance.html", context)


@login_required
def recharge(request):
    form = RechargeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        provider = get_provider(form.cleaned_data["provider"])
        try:
            order = services.order_create(
                user=request.user, amount=form.cleaned_data["amount"], provider=provider.name
            )
        except services.BillingError as error:
            form.add_error("amount", str(error))
        else:
            if paying := _payment_start(request, order, provider):
                return paying
    status = services.tier_status(request.user)
    context = {
        "form": form,
        "redeem_form": RedeemForm(),
        "tier": status,
        "tiers": BonusTier.objects.all(),
        "presets": settings.RECHARGE_PRESETS,
        "recent_orders": request.user.recharge_orders.prefetch_related("tickets")[:5],
        "enterprise": _enterprise_note(request.user, status.total_recharged),
        "providers": form.providers,
    }
    return render(request, "billing/recharge.html", context)


def _payment_start(request, order, provider):
    """Sends the user to the provider to pay `order`; None, with the order failed and a message
    saying so, when the provider does not answer."""
    try:
        return redirect(provider.start(order, request))
    except Exception:
        log.exception("Could not start a %s payment for %s", provider.name, order.number)
        services.order_mark_failed(order=order, reason="The payment provider did not answer.")
        messages.error(
            request,
            f"{provider.label} did not answer, so nothing was charged. "
            "Try again in a minute, or choose another way to pay.",
        )
        return None


def _enterprise_note(user, total_recharged):
    thresholds = BillingSettings.load()
    now = timezone.localtime()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent_today = services.spend_between(user, today, now)
    return {
        "eligible": total_recharged >= thresholds.enterprise_recharge_threshold
        or spent_today >= thresholds.enterprise_daily_spend_threshold,
        "recharge_threshold": thresholds.enterprise_recharge_threshold,
        "spend_threshold": thresholds.enterprise_daily_spend_threshold,
    }


@login_required
@require_GET
def bonus_preview(request):
    field = AmountField(minimum=settings.RECHARGE_MIN, maximum=settings.RECHARGE_MAX)
    context: dict[str, object] = {"preview_error": "", "preview_amount": None}
    try:
        amount = field.clean(request.GET.get("amount", ""))
    except ValidationError as error:
        context["preview_error"] = " ".join(error.messages)
    else:
        if amount:
            bonus, tier = services.bonus_for(request.user, amount)
            context.update(preview_amount=amount, preview_bonus=bonus, preview_tier=tier)
    return render(request, "billing/recharge.html#bonus-preview", context)


@login_required
@require_POST
def redeem(request):
    attempts, window = settings.REDEEM_ATTEMPTS
    form = RedeemForm(request.POST)
    if limit_reached(f"redeem:{request.user.pk}", limit=attempts, window=window):
        messages.error(
            request,
            f"Too many code attempts. Wait {window // 60} minutes, then try again.",
        )
    elif not form.is_valid():
        messages.error(request, "Enter the redemption code.")
    else:
        try:
            entry = services.code_redeem(user=request.user, code=form.cleaned_data["code"])
        except services.RedemptionRefused as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request, f"Code redeemed: {format_usd(entry.amount)} added to your balance."
            )
            return redirect("billing:balance")
    return redirect("billing:recharge")


@login_required
def orders(request):
    paginator = Paginator(request.user.recharge_orders.prefetch_related("tickets"), 25)
    page = paginator.get_page(request.GET.get("page"))
    now = timezone.now()
    return render(request, "billing/orders.html", {"page": page, "now": now})


@login_required
def order_detail(request, number):
    order = _get_order_for_user(request, number)
    provider = PROVIDERS.get(order.provider)
    can_pay = (
        order.status == RechargeOrder.Status.PENDING
        and isinstance(provider, SandboxProvider)
        and provider.is_configured()
    )
    if request.GET.get("paid") and order.status == RechargeOrder.Status.PENDING:
        messages.info(
            request, "Payment received by the provider; it is usually credited within a minute."
        )
    return render(
        request,
        "billing/order.html",
        {
            "order": order,
            "can_pay": can_pay,
            "can_retry": order.status in RETRYABLE,
            "late": order.is_late(),
            "tickets": order.tickets.filter(user=request.user),
        },
    )


# Orders that ended without money: the user may try again with the same amount and method.
RETRYABLE = {RechargeOrder.Status.FAILED, RechargeOrder.Status.EXPIRED}


@login_required
@require_POST
def order_retry(request, number):
    """A failed or expired order tried again: a new order of the same amount, paid the same
    way. The old order stays as it was, in the history."""
    order = _get_order_for_user(request, number)
    if order.status not in RETRYABLE:
        messages.info(
            request,
            f"Order {order.number} is {order.get_status_display().lower()}: "
            "there is nothing to try again.",
        )
        return redirect(order)
    provider = PROVIDERS.get(order.provider)
    if provider is None or provider not in enabled_providers():
        messages.warning(
            request,
            f"{provider.label if provider else order.provider.capitalize()} is not available "
            f"any more. Recharge {format_usd(order.amount)} with another way to pay.",
        )
        return redirect("billing:recharge")
    try:
        again = services.order_create(
            user=request.user, amount=order.amount, provider=provider.name
        )
    except services.BillingError as error:
        messages.error(request, str(error))
        return redirect("billing:recharge")
    return _payment_start(request, again, provider) or redirect(again)


@login_required
async def sandbox_pay(request, number):
    """The sandbox's payment page. Paying sends a signed callback to our own webhook."""
    provider = get_provider("sandbox")
    if not provider.is_configured():
        raise Http404("The sandbox is off.")
    user = await request.auser()
    if text_param(number, max_length=24) is None:
        raise Http404("No such order.")
    order = await RechargeOrder.objects.filter(
        number=number, user=user, provider=provider.name
    ).afirst()
    if order is None:
        raise Http404("No such order.")
    if request.method == "POST" and order.status == RechargeOrder.Status.PENDING:
        succeeded = request.POST.get("outcome") != "fail"
        body, headers = provider.signed_callback(order, succeeded=succeeded)
        url = request.build_absolute_uri(reverse("billing:webhook", args=[provider.name]))
        headers["Content-Type"] = "application/json"
        try:
            timeout = aiohttp.ClientTimeout(total=15)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, data=body, headers=headers) as response,
            ):
                delivered = response.status == 200
        except aiohttp.ClientError:
            delivered = False
        await order.arefresh_from_db()
        if not delivered:
            note = messages.ERROR, "The sandbox could not reach the payment webhook. Try again."
        elif order.status == RechargeOrder.Status.CREDITED:
            note = messages.SUCCESS, f"Paid: {format_usd(order.total)} added to your balance."
        else:
            note = messages.WARNING, "The payment was declined; nothing was charged."
        await sync_to_async(messages.add_message)(request, *note)
        return redirect("billing:order", number=order.number)
    return await sync_to_async(render)(request, "billing/sandbox_pay.html", {"order": order})


@csrf_exempt
@require_POST
def webhook(request, provider):
    """Payment callbacks: verified, applied once per event id, answered quickly."""
    found = PROVIDERS.get(provider)
    if found is None or not found.is_configured():
        raise Http404("No such payment provider.")
    try:
        update = found.parse_webhook(request)
    except InvalidSignature as error:
        services.payment_event_reject(
            provider=provider, detail=str(error), source=request.META.get("REMOTE_ADDR", "")
        )
        return JsonResponse({"error": "invalid signature"}, status=400)
    event = services.payment_event_handle(provider=provider, update=update)
    return JsonResponse({"outcome": event.outcome})


def pricing(request):
    lines = list(Line.available_to(request.user))
    # ?group= is what the page sent before lines had one name: old links keep working.
    wanted = request.GET.get("line") or request.GET.get("group")
    selected = Line.shown_first(lines, wanted)
    prices = ModelPrice.objects.filter(enabled=True)
    query = text_param(request.GET.get("q", "")[:100]) or ""
    vendor = text_param(request.GET.get("vendor")) or ""
    if query:
        prices = prices.filter(Q(model__icontains=query) | Q(vendor__icontains=query))
    if vendor:
        prices = prices.filter(vendor=vendor)
    multiplier = selected.multiplier if selected else 1
    on_sale = list(prices)
    # Announced changes not yet applied: each row shows its price from each on.
    upcoming = services.prices_upcoming(prices=on_sale, line=selected)
    rows = [
        {
            **price.prices_on(multiplier),
            "upcoming": [
                {
                    **step.price.prices_on(step.line_multiplier),
                    "when": step.effective_at,
                    "announcement_id": step.announcement_id,
                }
                for step in upcoming.get(price.pk, ())
            ],
        }
        for price in on_sale
    ]
    context = {
        "lines": lines,
        "selected": selected,
        "rows": rows,
        "any_upcoming": bool(upcoming),
        "query": query,
        "vendor": vendor,
        "vendors": ModelPrice.objects.filter(enabled=True)
        .order_by("vendor")
        .values_list("vendor", flat=True)
        .distinct(),
    }
    if request.htmx:
        return render(request, "billing/pricing.html#price-table", context)
    return render(request, "billing/pricing.html", context)
