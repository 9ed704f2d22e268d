"""One ASGI application for the console and the gateway.

Requests under /v1/ go straight to the gateway (relay.gateway), past Django's request cycle,
which costs more than the gateway's whole latency budget; /metrics to the Prometheus endpoint
(console.lib.metrics), which a scraper reaches by address; everything else is Django. The
lifespan protocol starts the gateway (upstream connections, its log flusher) and, on shutdown,
flushes what it still holds. Without a broker (the embedded default) it also runs Celery beat's
schedule (PERIODIC_JOBS_IN_PROCESS), since no beat can.
"""

import gc
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

django_application = get_asgi_application()

from billing.holds import money_held  # noqa: E402
from console.celery import app as celery_app  # noqa: E402
from console.lib import metrics  # noqa: E402
from console.lib.background import PeriodicJobs  # noqa: E402
from relay.gateway import Gateway  # noqa: E402 (needs Django set up first)
from relay.handlers import misdirected  # noqa: E402
from relay.playground import CHAT_PATH, Playground  # noqa: E402

gateway = Gateway()
periodic_jobs = PeriodicJobs(celery_app, settings.CELERY_BEAT_SCHEDULE)
playground = Playground(gateway)  # Django, for the console's playground chats: see there
metrics_endpoint = metrics.Endpoint(money_held=money_held)


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == CHAT_PATH:
        await playground(scope, receive, send)
        return
    if scope["type"] == "http" and (
        scope["path"] == "/v1" or scope["path"].startswith("/v1/") or misdirected(scope["path"])
    ):  # misdirected: an API call with a wrong base URL (/chat/completions), told the right one
        await gateway(scope, receive, send)
        return
    if scope["type"] == "http" and scope["path"] == metrics.PATH:
        await metrics_endpoint(scope, receive, send)  # past Django too: a scraper asks by address
        return
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await django_application(scope, receive, send)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                metrics.process_started()
                await gateway.start()
                if settings.PERIODIC_JOBS_IN_PROCESS:
                    periodic_jobs.start()
            except Exception as error:
                await send({"type": "lifespan.startup.failed", "message": str(error)})
                return
            # What exists now (Django, models, the gateway's caches) lives as long as the
            # process: kept out of the collector's full passes, which would otherwise stop
            # the event loop for milliseconds at a time under load.
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await periodic_jobs.stop()
            await gateway.stop()
            metrics.process_stopped()
            await send({"type": "lifespan.shutdown.complete"})
            return
