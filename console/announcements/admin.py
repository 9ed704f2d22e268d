from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, mark_safe

from accounts.models import EmailDelivery
from console.announcements import delivery, services
from console.announcements.models import Announcement


class AnnouncementForm(forms.ModelForm):
    class Meta:
        model = Announcement
        fields = ["title", "kind", "body", "pinned", "starts_at", "ends_at", "email_subscribers"]
        widgets = {"body": forms.Textarea(attrs={"rows": 14})}

    def clean(self):
        cleaned = super().clean()
        starts, ends = cleaned.get("starts_at"), cleaned.get("ends_at")
        if cleaned.get("kind") == Announcement.Kind.MAINTENANCE and not (starts and ends):
            self.add_error("starts_at", "A maintenance needs its start and its end.")
        if starts and ends and ends <= starts:
            self.add_error("ends_at", "The end must be after the start.")
        return cleaned


@admin.register(Announcement)
class AnnouncementAdmin(admin.ModelAdmin):
    form = AnnouncementForm
    list_display = ("title", "kind", "pinned", "published_at", "deliveries")
    list_filter = ("kind", "pinned", ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("title", "body")
    readonly_fields = ("preview", "published_at", "deliveries")
    fieldsets = (
        (None, {"fields": ("title", "kind", "pinned", "body", "preview")}),
        ("Maintenance", {"fields": ("starts_at", "ends_at")}),
        ("Publication", {"fields": ("email_subscribers", "published_at", "deliveries")}),
    )
    actions = ["publish"]

    def save_model(self, request, obj, form, change):
        if obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="preview")
    def preview(self, announcement):
        if not announcement.pk:
            return "Save to see the rendered text."
        # Sanitised by nh3 when saved: safe to show as HTML.
        return format_html(
            '<div class="announcement-preview">{}</div><p><a href="{}">Open the page</a></p>',
            mark_safe(announcement.body_html),  # noqa: S308
            announcement.get_absolute_url(),
        )

    @admin.display(description="emails")
    def deliveries(self, announcement):
        if not announcement.pk:
            return "—"
        counts = delivery.delivery_counts(announcement)
        if not counts:
            return "none"
        labels = dict(EmailDelivery.Status.choices)
        return ", ".join(f"{labels.get(k, k)} {n}" for k, n in sorted(counts.items()))

    def has_publish_announcement_permission(self, request):
        return request.user.has_perm("announcements.publish_announcement")

    @admin.action(
        description="Publish now (emails the subscribers of its kind)",
        permissions=["publish_announcement"],
    )
    def publish(self, request, queryset):
        published = 0
        for announcement in queryset.filter(published_at__isnull=True):
            services.announcement_publish(announcement=announcement)
            published += 1
        self.message_user(request, f"{published} announcement(s) published.", messages.SUCCESS)
