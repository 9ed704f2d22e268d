from django.urls import path
from django.views.generic import RedirectView

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("", views.token_list, name="list"),
    path("new/", views.token_create, name="create"),
    # A token's usage page is one of the logs' pages; old links still land on it.
    path("<int:pk>/", RedirectView.as_view(pattern_name="logs:token"), name="usage"),
    path("<int:pk>/edit/", views.token_edit, name="edit"),
    path("<int:pk>/toggle/", views.token_toggle, name="toggle"),
    path("<int:pk>/rotate/", views.token_rotate, name="rotate"),
    path("<int:pk>/delete/", views.token_delete, name="delete"),
]
