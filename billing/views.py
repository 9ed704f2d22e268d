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
from billing.pricing import call_cost
from billing.providers import PROVIDERS, InvalidSignature, SandboxProvider, get_provider
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
            try:
                return redirect(provider.start(order, request))
            except Exception:
                log.exception("Could not start a %s payment for %s", provider.name, order.number)
                services.order_mark_failed(
                    order=order, reason="The payment provider did not answer."
                )
                messages.error(
                    request,
                    f"{provider.label} did not answer, so nothing was charged. "
                    "Try again in a minute, or choose another way to pay.",
                )
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
            "late": order.is_late(),
            "tickets": order.tickets.filter(user=request.user),
        },
    )


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
    selected = next((line for line in lines if line.name == wanted), None)
    selected = selected or next((line for line in lines if line.name == "default"), None)
    selected = selected or (lines[0] if lines else None)
    prices = ModelPrice.objects.filter(enabled=True)
    query = text_param(request.GET.get("q", "")[:100]) or ""
    vendor = text_param(request.GET.get("vendor")) or ""
    if query:
        prices = prices.filter(Q(model__icontains=query) | Q(vendor__icontains=query))
    if vendor:
        prices = prices.filter(vendor=vendor)
    multiplier = selected.multiplier if selected else 1
    rows = [
        {
            "price": price,
            "input": None if price.is_per_call else price.input_per_million(multiplier),
            "output": None if price.is_per_call else price.output_per_million(multiplier),
            "parts": {} if price.is_per_call else price.parts_per_million(multiplier),
            "per_call": call_cost(call_price=price.call_price, line_multiplier=multiplier).cost
            if price.is_per_call
            else None,
        }
        for price in prices
    ]
    context = {
        "lines": lines,
        "selected": selected,
        "rows": rows,
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
