"""The announcements pages: the list, one announcement, the Atom feed, and one-click
unsubscribe from the emails."""

from django.conf import settings
from django.contrib.syndication.views import Feed
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.feedgenerator import Atom1Feed
from django.views.decorators.csrf import csrf_exempt

from accounts.models import NotificationSettings, User
from accounts.staff import staff_may_enter
from console.announcements.models import Announcement
from console.lib import unsubscribe as unsubscribe_links


def _visible_announcements(request):
    published = Announcement.objects.filter(published_at__lte=timezone.now())
    if staff_may_enter(request) and request.user.has_perm("announcements.view_announcement"):
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
        "announcements/announcements.html",
        {
            "page": page,
            "kind": kind,
            "kinds": Announcement.Kind.choices,
            "seen_before": seen_before,
        },
    )


def announcement_detail(request, pk):
    announcement = get_object_or_404(_visible_announcements(request), pk=pk)
    return render(request, "announcements/announcement.html", {"announcement": announcement})


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
        return render(
            request, "announcements/unsubscribe.html", {"error": error.message}, status=400
        )
    field, label = unsubscribe_links.KINDS[kind]
    prefs = NotificationSettings.of(user)
    done = False
    if request.method == "POST":
        setattr(prefs, field, False)
        prefs.save(update_fields=[field])
        done = True
    return render(
        request,
        "announcements/unsubscribe.html",
        {"label": label, "done": done, "subscribed": getattr(prefs, field), "email": user.email},
    )
