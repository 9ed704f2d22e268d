"""The front door: the dashboard for a signed-in user; for a visitor, what the service is, its
base URL, the models on sale with their prices, and a way in."""

from django.shortcuts import render

from billing.models import Line, ModelPrice
from console.views import site


def index(request):
    if request.user.is_authenticated:
        return site.dashboard(request)
    return home(request)


def home(request):
    line = Line.shown_first(list(Line.available_to(None)))
    multiplier = line.multiplier if line else 1
    prices = ModelPrice.objects.filter(enabled=True).order_by("vendor", "model")
    return render(
        request,
        "console/home.html",
        {
            "line": line,
            "rows": [price.prices_on(multiplier) for price in prices],
            "vendors": sorted({price.vendor for price in prices}),
            "example_model": ModelPrice.example_chat_model(),
        },
    )
