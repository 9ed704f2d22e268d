import zoneinfo

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import Count, Window
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from billing.models import Account, ModelPrice
from console.context_processors import unread_announcements
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


def _board(request, filters, tz, account, *, days=None, models=False):
    """The cards, the per-minute chart and (with `days`) the spend, (with `models`) the
    models for the filter list, from one rollup read."""
    return stats.dashboard(
        request.user,
        account.balance if account else 0,
        tz,
        span=stats.RANGES[filters["range"]],
        days=days,
        models=models,
        token_id=filters["token"],
        model_name=filters["model"],
    )


def _live_context(board, filters, filtered_token):
    return {
        "cards": board.cards,
        "filtered_token": filtered_token,
        "series": board.series,
        "series_summary": stats.summary(board.series),
        "filters": filters,
        "ranges": stats.RANGES,
    }


@login_required
def dashboard(request):
    tz = _user_zone(request.user)
    filters = _chart_filters(request)
    account = Account.objects.filter(user=request.user).first()
    board = _board(
        request, filters, tz, account, days=stats.DAY_RANGES[filters["days"]], models=True
    )
    # What the filter list and the first steps need of the tokens, deleted ones included.
    tokens = list(
        Token.objects.filter(user=request.user)
        .only("name", "deleted_at")
        .order_by("deleted_at", "name")
    )
    filtered_token = next((t for t in tokens if t.pk == filters["token"]), None)
    # Requests in the last 30 days show in the read; only an account without any asks further.
    called = board.called or UsageDay.objects.filter(user_id=request.user.pk).exists()
    context = _live_context(board, filters, filtered_token)
    # The header's count too, which spares the context processor's query.
    context["latest_unread"], context["unread_announcements"] = _latest_unread(request.user)
    context.update(
        spend=board.spend,
        tokens=tokens,
        models=board.models,
        first_run={
            "recharged": bool(account and (account.total_recharged or account.balance)),
            "token": any(token.deleted_at is None for token in tokens),
            "called": called,
        },
        # For the first steps only, which an account that made requests no longer sees.
        example_model=None if called else ModelPrice.example_chat_model(),
        day_ranges=stats.DAY_RANGES,
    )
    return render(request, "console/dashboard.html", context)


def _latest_unread(user):
    """The three newest announcements this user has not seen, and how many there are, in one
    query."""
    latest = list(unread_announcements(user).annotate(unread=Window(Count("pk")))[:3])
    return latest, latest[0].unread if latest else 0


@login_required
def dashboard_live(request):
    """The cards, the per-minute chart and the balance, for the page to refresh itself."""
    filters = _chart_filters(request)
    account = Account.objects.filter(user=request.user).first()
    board = _board(request, filters, _user_zone(request.user), account)
    filtered_token = (
        Token.objects.filter(user=request.user, pk=filters["token"]).only("name").first()
        if filters["token"]
        else None
    )
    context = _live_context(board, filters, filtered_token)
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
