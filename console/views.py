from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache


@login_required
def dashboard(request):
    return render(request, "console/dashboard.html", {"example_model": "gpt-4o-mini"})


def help_center(request):
    return render(
        request,
        "console/help.html",
        {
            "maintenance_start": settings.MAINTENANCE_START_HOUR,
            "maintenance_end": settings.MAINTENANCE_END_HOUR,
            "site_time_zone": settings.TIME_ZONE,
            "log_retention_days": settings.LOG_RETENTION_DAYS,
        },
    )


@never_cache
def healthz(request):
    """For load balancers: the process answers and reaches its database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok", content_type="text/plain")
