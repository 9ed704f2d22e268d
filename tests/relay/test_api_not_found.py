"""An API call sent with a wrong base URL (no /v1, /v1 twice, another prefix) gets an error in
its client's shape that names the base URL to use, not the console's HTML page; the console's
own pages still answer their own 404."""

import anthropic
import httpx
import openai
import pytest

HELLO = [{"role": "user", "content": "Hello"}]


def test_an_openai_client_without_v1_is_told_the_base_url(api, live_site, settings):
    client = api.with_options(base_url=live_site.url)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert raised.value.body["code"] == "wrong_base_url"
    assert f"base URL to {settings.SITE_URL}/v1 " in str(raised.value)
    assert "/help/#base-url" in str(raised.value)


def test_an_openai_client_with_v1_twice_is_told_the_base_url(api, live_site, settings):
    client = api.with_options(base_url=f"{live_site.url}/v1/v1")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.list()
    assert f"base URL to {settings.SITE_URL}/v1 " in str(raised.value)
    assert f"served at {settings.SITE_URL}/v1/models" in str(raised.value)


def test_an_anthropic_client_at_v1_is_told_to_leave_it_out(token_and_key, live_site, settings):
    _token, key = token_and_key
    client = anthropic.Anthropic(base_url=f"{live_site.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HELLO)
    assert raised.value.body["type"] == "error"  # in Anthropic's shape
    assert f"base URL to {settings.SITE_URL} (without /v1" in str(raised.value)


@pytest.mark.parametrize(
    "path",
    [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/responses",
        "/images/generations",
        "/api/v1/chat/completions",
        "/openai/v1/embeddings",
        "/v1/v1/chat/completions",
    ],
)
def test_api_calls_with_any_wrong_prefix_are_told_the_base_url(live_site, settings, path):
    response = httpx.post(f"{live_site.url}{path}", json={})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "wrong_base_url"
    assert f"{settings.SITE_URL}/v1 " in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/audio/speech", "/v1/audio/speech", "/v1/nothing"])
def test_calls_the_gateway_does_not_serve_list_what_it_serves(live_site, settings, path):
    response = httpx.post(f"{live_site.url}{path}", json={})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_url"
    assert "/v1/chat/completions" in error["message"]
    assert f"base URL {settings.SITE_URL}/v1" in error["message"]


@pytest.mark.parametrize("path", ["/no-such-page/", "/logs/x/models", "/tokens/models"])
def test_the_consoles_own_404_is_still_a_page(live_site, path):
    response = httpx.get(f"{live_site.url}{path}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/", "/help/", "/accounts/login/"])
def test_the_consoles_pages_are_not_taken_for_api_calls(live_site, path):
    response = httpx.get(f"{live_site.url}{path}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_a_path_under_the_admin_stays_the_admins(live_site):
    response = httpx.get(f"{live_site.url}/admin/chat/completions")
    assert response.status_code == 302  # to the admin's sign-in, as any admin path
    assert "/admin/login/" in response.headers["location"]
