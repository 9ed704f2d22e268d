import zoneinfo

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from accounts.models import NotificationSettings
from billing.models import Account, ModelPrice
from console.announcements.models import Announcement
from console.lib.params import id_param, text_param
from logs import stats
from logs.models import UsageDay
from tokens.models import Token


def _user_zone(user):
    try:
        return zoneinfo.ZoneInfo(user.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _chart_filters(request):
    span = request.GET.get("range", "1h")
    days = request.GET.get("days", "7d")
    return {
        "range": span if span in stats.RANGES else "1h",
        "days": days if days in stats.DAY_RANGES else "7d",
        "token": id_param(request.GET.get("token")),
        "model": text_param(request.GET.get("model")) or None,
    }


def _live_context(request, filters, tz):
    account = Account.objects.filter(user=request.user).first()
    series = stats.minute_series(
        request.user,
        stats.RANGES[filters["range"]],
        tz,
        token_id=filters["token"],
        model_name=filters["model"],
    )
    cards = stats.dashboard_cards(
        request.user,
        account.balance if account else 0,
        tz,
        token_id=filters["token"],
        model_name=filters["model"],
    )
    return {
        "cards": cards,
        "filtered_token": (
            Token.objects.filter(user=request.user, pk=filters["token"]).first()
            if filters["token"]
            else None
        ),
        "series": series,
        "series_summary": stats.summary(series),
        "filters": filters,
        "ranges": stats.RANGES,
    }


@login_required
def dashboard(request):
    tz = _user_zone(request.user)
    filters = _chart_filters(request)
    context = _live_context(request, filters, tz)
    account = Account.objects.filter(user=request.user).first()
    has_tokens = Token.objects.alive().filter(user=request.user).exists()
    has_requests = UsageDay.objects.filter(user_id=request.user.pk).exists()
    context.update(
        spend=stats.daily_spend_by_model(
            request.user,
            stats.DAY_RANGES[filters["days"]],
            tz,
            token_id=filters["token"],
            model_name=filters["model"],
        ),
        tokens=Token.objects.filter(user=request.user).order_by("deleted_at", "name"),
        models=stats.used_models(request.user),
        first_run={
            "recharged": bool(account and (account.total_recharged or account.balance)),
            "token": has_tokens,
            "called": has_requests,
        },
        example_model=ModelPrice.example_chat_model(),
        latest_unread=_latest_unread(request.user),
        day_ranges=stats.DAY_RANGES,
    )
    return render(request, "console/dashboard.html", context)


def _latest_unread(user):
    seen = NotificationSettings.of(user).announcements_seen_at
    items = Announcement.objects.filter(published_at__lte=timezone.now())
    if seen:
        items = items.filter(published_at__gt=seen)
    return list(items[:3])


@login_required
def dashboard_live(request):
    """The cards, the per-minute chart and the balance, for the page to refresh itself."""
    context = _live_context(request, _chart_filters(request), _user_zone(request.user))
    return render(request, "console/dashboard_live.html", context)


def help_center(request):
    return render(
        request,
        "console/help.html",
        {
            "maintenance_start": settings.MAINTENANCE_START_HOUR,
            "maintenance_end": settings.MAINTENANCE_END_HOUR,
            "site_time_zone": settings.TIME_ZONE,
            "log_retention_days": settings.LOG_RETENTION_DAYS,
            "rollup_retention_days": settings.ROLLUP_RETENTION_DAYS,
        },
    )


@never_cache
def healthz(request):
    """For load balancers: the process answers and reaches its database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok", content_type="text/plain")
