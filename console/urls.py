from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from console.views import announcements, site, support

admin.site.site_header = f"{settings.SITE_NAME} staff"
admin.site.site_title = f"{settings.SITE_NAME} staff"
admin.site.index_title = "Operations"


console_patterns = [
    path("", site.dashboard, name="dashboard"),
    path("dashboard/live/", site.dashboard_live, name="dashboard_live"),
    path("help/", site.help_center, name="help"),
    path("announcements/", announcements.announcements, name="announcements"),
    path("announcements/feed/", announcements.AnnouncementFeed(), name="announcement_feed"),
    path("announcements/<int:pk>/", announcements.announcement_detail, name="announcement"),
    path("unsubscribe/<str:token>/", announcements.unsubscribe, name="unsubscribe"),
    path("support/", support.ticket_list, name="tickets"),
    path("support/new/", support.ticket_new, name="ticket_new"),
    path("support/new/token-ips/", support.token_ips, name="ticket_token_ips"),
    path("support/attachments/<int:pk>/", support.attachment, name="ticket_attachment"),
    path("support/<str:number>/", support.ticket_detail, name="ticket"),
    path("support/<str:number>/reply/", support.ticket_reply, name="ticket_reply"),
    path("support/<str:number>/close/", support.ticket_close, name="ticket_close"),
    path("support/<str:number>/reopen/", support.ticket_reopen, name="ticket_reopen"),
]

urlpatterns = [
    path("", include((console_patterns, "console"))),
    path("healthz", site.healthz, name="healthz"),
    path("", include("billing.urls")),
    path("tokens/", include("tokens.urls")),
    path("logs/", include("logs.urls")),
    path("profile/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
