from datetime import UTC, datetime
from functools import cache as once

from django.conf import settings
from django.core.cache import cache
from django.db.models import DateTimeField, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import NotificationSettings
from console.announcements.models import Announcement


def site(request):
    context = {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "api_base": settings.SITE_URL + "/v1",
        "support_email": settings.SUPPORT_EMAIL,
        "maintenance": maintenance_notice(),
    }
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        # Counted when the page shows it, once: not for a fragment without the header, nor
        # for a page that passes a count of its own (the dashboard, from its list of them).
        context["unread_announcements"] = once(lambda: unread_announcements(user).count())
    return context


def unread_announcements(user):
    """The published announcements this user has not seen yet, in one query."""
    seen = NotificationSettings.objects.filter(user_id=user.pk).values("announcements_seen_at")
    never = Value(datetime.min.replace(tzinfo=UTC), output_field=DateTimeField())
    return Announcement.objects.filter(
        published_at__lte=timezone.now(),
        published_at__gt=Coalesce(Subquery(seen[:1]), never),
    )


def maintenance_notice(now=None):
    """What the quiet banner says now, if anything: the daily window, or an announced one."""
    if now is not None:
        return _daily_window(now) or _announced(now)
    cached = cache.get("maintenance-notice")
    if cached is None:
        now = timezone.now()
        cached = _daily_window(now) or _announced(now) or ""
        cache.set("maintenance-notice", cached, 30)  # every page asks; the answer keeps a while
    return cached or None


def _daily_window(now):
    start, end = settings.MAINTENANCE_START_HOUR, settings.MAINTENANCE_END_HOUR
    local = timezone.localtime(now, timezone.get_default_timezone())
    if not start <= local.hour < end:
        return None
    return (
        f"Daily maintenance until {end}:00 ({settings.TIME_ZONE}): short interruptions are "
        "possible. Retry failed requests, and keep your request data until answers arrive."
    )


def _announced(now):
    current = (
        Announcement.objects.filter(
            kind=Announcement.Kind.MAINTENANCE,
            published_at__lte=now,
            starts_at__lte=now,
            ends_at__gt=now,
        )
        .order_by("ends_at")
        .first()
    )
    if current is None:
        return None
    until = timezone.localtime(current.ends_at, timezone.get_default_timezone())
    return (
        f"Maintenance in progress until {until:%Y-%m-%d %H:%M} ({settings.TIME_ZONE}): "
        f"{current.title}"
    )
