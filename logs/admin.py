import uuid

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from logs.models import RequestLog


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    """Staff look a request up by the id a user quotes; rows are never edited."""

    list_display = (
        "id",
        "created_at",
        "user",
        "token",
        "model",
        "status",
        "error_code",
        "cost",
        "channel",
        "client_ip",
        "latency_ms",
    )
    list_filter = ("status", "endpoint", "stream")
    search_fields = ("=id",)
    list_select_related = ("user", "token")
    show_full_result_count = False
    ordering = ("-id",)
    date_hierarchy = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="channel")
    def channel(self, log):
        # The channel by id, linked to its page in the gateway's admin.
        if log.channel_id is None:
            return "—"
        url = reverse("admin:relay_channel_change", args=[log.channel_id])
        return format_html('<a href="{}">#{}</a>', url, log.channel_id)

    def get_search_results(self, request, queryset, search_term):
        # Only an exact request id is searched: a LIKE over millions of rows would crawl.
        try:
            return queryset.filter(pk=uuid.UUID(search_term.strip())), False
        except ValueError:
            return (queryset.none() if search_term else queryset), False
