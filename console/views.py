import zoneinfo

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.syndication.views import Feed
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.feedgenerator import Atom1Feed
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from accounts.models import NotificationSettings, User
from billing.models import Account, ModelPrice
from console.lib import unsubscribe as unsubscribe_links
from console.models import Announcement
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
    token = request.GET.get("token", "")
    model = request.GET.get("model", "")
    return {
        "range": span if span in stats.RANGES else "1h",
        "days": days if days in stats.DAY_RANGES else "7d",
        "token": int(token) if token.isdigit() else None,
        "model": model[:100] or None,
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
    return {
        "cards": stats.dashboard_cards(request.user, account.balance if account else 0, tz),
        "series": series,
        "series_summary": stats.summary(series),
        "filters": filters,
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
        ranges=stats.RANGES,
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
    """The cards and the per-minute chart alone, for the page to refresh itself."""
    context = _live_context(request, _chart_filters(request), _user_zone(request.user))
    return render(request, "console/dashboard.html#live", context)


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


def _visible_announcements(user):
    published = Announcement.objects.filter(published_at__lte=timezone.now())
    if user.is_authenticated and user.is_staff:
        return Announcement.objects.all()  # staff preview drafts at their own address
    return published


def announcements(request):
    kind = request.GET.get("kind", "")
    items = Announcement.objects.filter(published_at__lte=timezone.now())
    if kind in Announcement.Kind.values:
        items = items.filter(kind=kind)
    paginator = Paginator(items, 20)
    page = paginator.get_page(request.GET.get("page"))
    seen_before = None
    if request.user.is_authenticated:
        prefs = NotificationSettings.of(request.user)
        seen_before = prefs.announcements_seen_at
        NotificationSettings.objects.filter(pk=prefs.pk).update(
            announcements_seen_at=timezone.now()
        )
    return render(
        request,
        "console/announcements.html",
        {
            "page": page,
            "kind": kind,
            "kinds": Announcement.Kind.choices,
            "seen_before": seen_before,
        },
    )


def announcement_detail(request, pk):
    announcement = get_object_or_404(_visible_announcements(request.user), pk=pk)
    return render(request, "console/announcement.html", {"announcement": announcement})


class AnnouncementFeed(Feed):
    title = f"{settings.SITE_NAME} announcements"
    description = "Price adjustments, maintenance and news."
    feed_type = Atom1Feed

    def link(self):
        return reverse("console:announcements")

    def items(self):
        return Announcement.objects.filter(published_at__lte=timezone.now())[:50]

    def item_title(self, item):
        return item.title

    def item_description(self, item):
        return item.body_html

    def item_pubdate(self, item):
        return item.published_at

    def item_updateddate(self, item):
        return item.updated_at


@csrf_exempt
def unsubscribe(request, token):
    """One-click unsubscribe (RFC 8058): a mail client POSTs; a person sees a page first.
    No login: the signed link names the user and the kind of email."""
    try:
        user_id, kind = unsubscribe_links.read(token)
        user = get_object_or_404(User, pk=user_id, is_active=True)
    except unsubscribe_links.BadLink as error:
        return render(request, "console/unsubscribe.html", {"error": error.message}, status=400)
    field, label = unsubscribe_links.KINDS[kind]
    prefs = NotificationSettings.of(user)
    done = False
    if request.method == "POST":
        setattr(prefs, field, False)
        prefs.save(update_fields=[field])
        done = True
    return render(
        request,
        "console/unsubscribe.html",
        {"label": label, "done": done, "subscribed": getattr(prefs, field), "email": user.email},
    )
