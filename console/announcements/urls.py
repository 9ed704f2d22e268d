"""The announcements pages and the unsubscribe link of every email. Their names stay in the
site's namespace ("console:announcement"), where every page and email links to them."""

from django.urls import path

from console.announcements import views

urlpatterns = [
    path("announcements/", views.announcements, name="announcements"),
    path("announcements/feed/", views.AnnouncementFeed(), name="announcement_feed"),
    path("announcements/<int:pk>/", views.announcement_detail, name="announcement"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
]
