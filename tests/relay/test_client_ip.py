import httpx

from logs.models import RequestLog
from tests.relay.conftest import wait_until

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def post(live_site, key, forwarded):
    return httpx.post(
        f"{live_site.url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": forwarded},
    )


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(
    live_site, token_and_key, channel, settings
):
    settings.TRUSTED_PROXIES = []
    _token, key = token_and_key
    post(live_site, key, "198.51.100.9")
    assert wait_until(lambda: RequestLog.objects.first()).client_ip == "127.0.0.1"


def test_x_forwarded_for_is_honoured_from_a_trusted_proxy(
    token_and_key, channel, settings, transactional_db
):
    settings.TRUSTED_PROXIES = ["127.0.0.1/32", "10.0.0.0/8"]
    from console.asgi import application
    from tests.conftest import LiveServer

    server = LiveServer(application).start()  # trusted proxies are read when the gateway starts
    try:
        _token, key = token_and_key
        # A client may forge the leftmost entries; the rightmost untrusted hop is the client.
        post(server, key, "6.6.6.6, 198.51.100.9, 10.1.2.3")
        assert wait_until(lambda: RequestLog.objects.first()).client_ip == "198.51.100.9"
    finally:
        server.stop()
