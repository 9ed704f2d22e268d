from django.urls import path

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("", views.token_list, name="list"),
    path("new/", views.token_create, name="create"),
    path("<int:pk>/", views.token_usage, name="usage"),
    path("<int:pk>/edit/", views.token_edit, name="edit"),
    path("<int:pk>/toggle/", views.token_toggle, name="toggle"),
    path("<int:pk>/rotate/", views.token_rotate, name="rotate"),
    path("<int:pk>/delete/", views.token_delete, name="delete"),
]
