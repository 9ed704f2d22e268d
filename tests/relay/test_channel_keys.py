"""A channel's key goes only to the address it was entered for: a new base URL needs the key
typed again in the same save, and a test request only ever uses what is saved."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from relay.health import channels_retest
from relay.models import Channel

OLD_KEY = "sk-old-upstream-key-1111"
NEW_KEY = "sk-new-upstream-key-2222"
ANSWER = {
    "id": "chatcmpl-listener",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Listener:
    """An HTTP server on 127.0.0.1 that answers every request and records its headers."""

    def __init__(self):
        self.requests = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                listener.requests.append({"path": self.path, "headers": dict(self.headers)})
                body = json.dumps(ANSWER).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys_seen(self):
        return [r["headers"].get("Authorization", "") for r in self.requests]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def old_address():
    listener = Listener()
    yield listener
    listener.stop()


@pytest.fixture
def new_address():
    listener = Listener()
    yield listener
    listener.stop()


@pytest.fixture
def keyed_channel(old_address, default_line):
    channel = Channel(name="main", base_url=old_address.url, model_names=["gpt-4o-mini"])
    channel.set_key(OLD_KEY)
    channel.save()
    channel.lines.set([default_line])
    return channel


def channel_form(channel, **changes):
    return {
        "name": channel.name,
        "type": channel.type,
        "base_url": channel.base_url,
        "api_key": "",
        "model_list": "\n".join(channel.model_names),
        "model_map": "{}",
        "lines": [line.pk for line in channel.lines.all()],
        "priority": "0",
        "weight": "10",
        "enabled": "on",
        "connect_timeout": "5",
        "read_timeout": "30",
        "simulator": "{}",
        **changes,
    }


def run_test_now(client, channel):
    return client.post(
        reverse("admin:relay_channel_changelist"),
        {"action": "test_now", "_selected_action": [channel.pk]},
        follow=True,
    )


def test_a_new_base_url_without_its_key_is_refused(
    staff_client, keyed_channel, old_address, new_address
):
    url = reverse("admin:relay_channel_change", args=[keyed_channel.pk])
    response = staff_client.post(url, channel_form(keyed_channel, base_url=new_address.url))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "enter the API key for the new address" in errors["api_key"][0]
    keyed_channel.refresh_from_db()
    assert keyed_channel.base_url == old_address.url
    assert keyed_channel.get_key() == OLD_KEY


def test_a_refused_change_sends_the_key_nowhere_new(
    staff_client, keyed_channel, old_address, new_address
):
    url = reverse("admin:relay_channel_change", args=[keyed_channel.pk])
    staff_client.post(url, channel_form(keyed_channel, base_url=new_address.url))
    assert "Main: answered" in run_test_now(staff_client, keyed_channel).content.decode()
    Channel.objects.filter(pk=keyed_channel.pk).update(auto_disabled_at="2026-01-01T00:00Z")
    channels_retest()
    assert old_address.keys_seen() == [f"Bearer {OLD_KEY}"] * 2
    assert new_address.requests == []


def test_a_new_base_url_with_its_key_saves(staff_client, keyed_channel, old_address, new_address):
    url = reverse("admin:relay_channel_change", args=[keyed_channel.pk])
    form = channel_form(keyed_channel, base_url=new_address.url, api_key=NEW_KEY)
    assert staff_client.post(url, form).status_code == 302
    keyed_channel.refresh_from_db()
    assert (keyed_channel.base_url, keyed_channel.get_key()) == (new_address.url, NEW_KEY)
    run_test_now(staff_client, keyed_channel)
    assert new_address.keys_seen() == [f"Bearer {NEW_KEY}"]
    assert old_address.requests == []


def test_other_changes_keep_the_saved_key(staff_client, keyed_channel, old_address):
    url = reverse("admin:relay_channel_change", args=[keyed_channel.pk])
    assert staff_client.post(url, channel_form(keyed_channel, priority="5")).status_code == 302
    keyed_channel.refresh_from_db()
    assert (keyed_channel.priority, keyed_channel.get_key()) == (5, OLD_KEY)


def test_a_vendor_channel_needs_its_base_url_and_serves_chat_models_only(
    staff_client, keyed_channel, prices
):
    url = reverse("admin:relay_channel_change", args=[keyed_channel.pk])
    form = channel_form(keyed_channel, type="anthropic", base_url="", api_key=NEW_KEY)
    page = staff_client.post(url, form).content.decode()
    assert "needs its base URL, such as https://api.anthropic.com/v1" in page
    form = channel_form(
        keyed_channel,
        type="gemini",
        base_url="https://generativelanguage.googleapis.com/v1beta",
        api_key=NEW_KEY,
        model_list="gpt-4o-mini\ntext-embedding-3-small",
    )
    page = staff_client.post(url, form).content.decode()
    assert "serves chat models only; move text-embedding-3-small" in page
    keyed_channel.refresh_from_db()
    assert keyed_channel.type == "openai"
