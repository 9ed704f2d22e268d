from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from console.views import home, playground, profile, site

admin.site.site_header = f"{settings.SITE_NAME} staff"
admin.site.site_title = f"{settings.SITE_NAME} staff"
admin.site.index_title = "Operations"


console_patterns = [
    # The dashboard for a signed-in user, the home page for a visitor.
    path("", home.index, name="dashboard"),
    path("dashboard/live/", site.dashboard_live, name="dashboard_live"),
    path("help/", site.help_center, name="help"),
    # Its chats go to relay.playground (console.asgi sends them there).
    path("playground/", playground.playground, name="playground"),
    path("profile/", profile.profile, name="profile"),
    path("profile/notifications/", profile.notifications, name="notifications"),
    path("", include("console.announcements.urls")),
    path("support/", include("console.support.urls")),
]

urlpatterns = [
    path("", include((console_patterns, "console"))),
    path("healthz", site.healthz, name="healthz"),
    path("", include("billing.urls")),
    path("tokens/", include("tokens.urls")),
    path("logs/", include("logs.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
