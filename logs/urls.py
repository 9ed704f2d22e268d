from django.urls import path

from logs import views

app_name = "logs"

urlpatterns = [
    path("", views.log_list, name="list"),
    path("export.csv", views.log_export, name="export"),
    path("ips/", views.ip_list, name="ips"),
    path("staff/", views.staff_dashboard, name="staff"),
    path("tokens/<int:pk>/", views.token_usage, name="token"),
    path("<str:request_id>/", views.log_breakdown, name="breakdown"),
]
