import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

django_application = get_asgi_application()


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        # Django does not speak the lifespan protocol; acknowledge it so servers start quietly.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await django_application(scope, receive, send)
