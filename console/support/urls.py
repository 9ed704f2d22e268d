"""The support pages, under /support/. Their names stay in the site's namespace
("console:ticket"), where every page and email links to them."""

from django.urls import path

from console.support import views

urlpatterns = [
    path("", views.ticket_list, name="tickets"),
    path("new/", views.ticket_new, name="ticket_new"),
    path("new/token-ips/", views.token_ips, name="ticket_token_ips"),
    path("attachments/<int:pk>/", views.attachment, name="ticket_attachment"),
    path("<str:number>/", views.ticket_detail, name="ticket"),
    path("<str:number>/reply/", views.ticket_reply, name="ticket_reply"),
    path("<str:number>/close/", views.ticket_close, name="ticket_close"),
    path("<str:number>/reopen/", views.ticket_reopen, name="ticket_reopen"),
]
