"""Secrets refuse to default, links ignore the Host header, and every secret can be rotated
without locking anyone out: old channel keys stay readable, old API keys keep working until
they are rehashed, redemption codes stay redeemable."""

import io
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from billing import services
from relay.models import Channel

ROOT = django_settings.BASE_DIR


def _python(*args, **env):
    """Runs `python …` in the project with the production settings and exactly these variables."""
    environment = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}} | {
        "DJANGO_SETTINGS_MODULE": "console.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("secret", [None, django_settings.DEVELOPMENT_SECRET_KEY])
def test_the_site_refuses_to_start_with_debug_off_and_no_secret_of_its_own(secret):
    env = {"DEBUG": "0"} | ({"SECRET_KEY": secret} if secret else {})
    started = _python("manage.py", "check", **env)
    assert started.returncode != 0
    assert "SECRET_KEY is not set" in started.stderr
    # The ASGI application (what uvicorn loads) refuses the same way.
    served = _python("-c", "import console.asgi", **env)
    assert served.returncode != 0 and "SECRET_KEY is not set" in served.stderr


def test_check_deploy_reports_the_development_secret_as_an_error():
    checked = _python("manage.py", "check", "--deploy", DEBUG="1")
    assert checked.returncode != 0
    assert "console.E001" in checked.stderr
    fine = _python(
        "manage.py",
        "check",
        "--deploy",
        DEBUG="1",
        SECRET_KEY="x" * 20 + "a-real-random-secret-1234567890",
    )
    assert "System check identified" in fine.stderr + fine.stdout, fine.stderr
    assert "console.E001" not in fine.stderr + fine.stdout


def _channel(name="upstream"):
    channel = Channel(name=name, type=Channel.Type.OPENAI, base_url="http://127.0.0.1:9/v1")
    channel.set_key(f"sk-upstream-{name}-1234")
    channel.save()
    return channel


def test_channel_keys_stay_readable_through_a_rotation(settings, db):
    settings.CHANNEL_KEY_SECRET = "first-channel-secret"
    old = _channel("old")
    settings.CHANNEL_KEY_SECRET = "second-channel-secret"
    # Without the old secret among the fallbacks the key is lost, and the message says why.
    with pytest.raises(ValueError, match="CHANNEL_KEY_SECRET_FALLBACKS"):
        Channel.objects.get(pk=old.pk).get_key()

    settings.CHANNEL_KEY_SECRET_FALLBACKS = ["first-channel-secret"]
    assert Channel.objects.get(pk=old.pk).get_key() == "sk-upstream-old-1234"
    new = _channel("new")
    out = io.StringIO()
    call_command("rotate_channel_keys", stdout=out)
    assert "2 channel keys were re-encrypted" in out.getvalue()

    # The old secret can go now.
    settings.CHANNEL_KEY_SECRET_FALLBACKS = []
    assert Channel.objects.get(pk=old.pk).get_key() == "sk-upstream-old-1234"
    assert Channel.objects.get(pk=new.pk).get_key() == "sk-upstream-new-1234"


def test_a_channel_secret_set_for_the_first_time_still_reads_the_derived_one(settings, db):
    settings.CHANNEL_KEY_SECRET = ""
    channel = _channel()
    settings.CHANNEL_KEY_SECRET = "now-a-secret-of-its-own"
    assert Channel.objects.get(pk=channel.pk).get_key() == "sk-upstream-upstream-1234"


def test_rotating_channel_keys_names_the_ones_no_secret_reads(settings, db):
    settings.CHANNEL_KEY_SECRET = "lost-secret"
    _channel("orphan")
    settings.CHANNEL_KEY_SECRET = "current-secret"
    with pytest.raises(CommandError, match="orphan"):
        call_command("rotate_channel_keys", "--dry-run", stdout=io.StringIO())


def test_redemption_codes_survive_a_secret_key_rotation(settings, alice, charlie):
    from datetime import timedelta

    from django.utils import timezone

    _batch, csv_text = services.redemption_batch_create(
        name="promo",
        amount=2_000_000,
        count=1,
        expires_at=timezone.now() + timedelta(days=1),
        staff_user=charlie,
    )
    code = csv_text.strip().splitlines()[-1].split(",")[0]
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "a-brand-new-secret-key-for-this-installation-0123456789"
    settings.SECRET_KEY_FALLBACKS = [old]
    services.code_redeem(user=alice, code=code)


def test_password_reset_links_use_site_url_not_the_host_header(
    settings, alice, django_capture_on_commit_callbacks
):
    settings.SITE_URL = "https://console.example.com"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    with django_capture_on_commit_callbacks(execute=True):
        Client(HTTP_HOST="localhost:6666").post("/accounts/password/reset/", {"email": alice.email})
    (message,) = mail.outbox
    assert "https://console.example.com/accounts/password/reset/key/" in message.body
    assert "localhost:6666" not in message.body + str(message.alternatives)


def test_in_production_only_the_sites_own_host_is_answered(db):
    # DEBUG is off in the tests, as in production; the test client's "testserver" is Django's.
    assert "localhost" not in django_settings.ALLOWED_HOSTS
    response = Client(HTTP_HOST="localhost:6666").get("/accounts/password/reset/")
    assert response.status_code == 400
    assert Client(HTTP_HOST="127.0.0.1:8000").get("/pricing/").status_code == 200
