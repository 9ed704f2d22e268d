from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from console import views

admin.site.site_header = f"{settings.SITE_NAME} staff"
admin.site.site_title = f"{settings.SITE_NAME} staff"
admin.site.index_title = "Operations"


console_patterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/live/", views.dashboard_live, name="dashboard_live"),
    path("help/", views.help_center, name="help"),
    path("announcements/", views.announcements, name="announcements"),
    path("announcements/feed/", views.AnnouncementFeed(), name="announcement_feed"),
    path("announcements/<int:pk>/", views.announcement_detail, name="announcement"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
]

urlpatterns = [
    path("", include((console_patterns, "console"))),
    path("healthz", views.healthz, name="healthz"),
    path("", include("billing.urls")),
    path("tokens/", include("tokens.urls")),
    path("logs/", include("logs.urls")),
    path("profile/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
