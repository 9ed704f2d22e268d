"""The client's address in a request's log row. The gateway reads no X-Forwarded-For itself:
uvicorn believes it from the proxies the Procfile trusts (`--proxy-headers
--forwarded-allow-ips "${TRUSTED_PROXIES:-127.0.0.1}"`), and the gateway logs what it found."""

import httpx
import pytest

from logs.models import RequestLog
from tests.relay.conftest import wait_until
from tests.relay.processes import GatewayProcess

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def logged_ip(url, key, forwarded):
    """Sends a request from 127.0.0.1 that says it was forwarded for `forwarded`; returns the
    client address of its log row."""
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": forwarded},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    row = wait_until(lambda: RequestLog.objects.filter(id=request_id).first(), timeout=15)
    return row.client_ip


@pytest.fixture
def web(tmp_path, transactional_db, token_and_key, channel):
    """The Procfile's web process (one worker), with TRUSTED_PROXIES as the test gives it."""
    started = []

    def start(trusted_proxies):
        process = GatewayProcess(
            tmp_path,
            f"web-{len(started)}",
            procfile=True,
            TRUSTED_PROXIES=trusted_proxies,
            GATEWAY_FLUSH_SECONDS="0.05",
        ).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_a_trusted_proxy_s_x_forwarded_for_is_the_client_ip(web, token_and_key):
    _token, key = token_and_key
    server = web("")  # unset: the Procfile trusts 127.0.0.1, where this request comes from
    assert logged_ip(server.url, key, "198.51.100.9") == "198.51.100.9"
    # A client may forge the leftmost entries; the one our proxy added is the client.
    assert logged_ip(server.url, key, "6.6.6.6, 198.51.100.9") == "198.51.100.9"
    # What is no address is not logged as one.
    assert logged_ip(server.url, key, "unknown") is None


def test_x_forwarded_for_from_a_peer_that_is_not_trusted_is_ignored(web, token_and_key):
    _token, key = token_and_key
    server = web("10.0.0.1")
    assert logged_ip(server.url, key, "198.51.100.9") == "127.0.0.1"


def test_the_gateway_itself_reads_no_x_forwarded_for(live_site, token_and_key, channel):
    """Without the server's proxy headers (`make run`), the header is nobody's business."""
    _token, key = token_and_key
    assert logged_ip(live_site.url, key, "198.51.100.9") == "127.0.0.1"
