import base64
import hashlib
import hmac
import re
import struct
import time

from allauth.mfa.models import Authenticator
from django.urls import reverse

from tests.conftest import PASSWORD


def totp(secret, at=None):
    """RFC 6238 code for a base32 secret, computed the way an authenticator app does."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((at or time.time()) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def log_in(client, user):
    return client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})


def activate_totp(client):
    # Turning on two-factor asks for the password again, however recent the login.
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 302
    assert page.url.startswith(reverse("account_reauthenticate"))
    client.post(page.url, {"password": PASSWORD})
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    secret = re.search(r'id="authenticator_secret"[^>]*value="([A-Z2-7]+)"', page.content.decode())
    secret = secret.group(1)
    response = client.post(reverse("mfa_activate_totp"), {"code": totp(secret)})
    assert response.status_code == 302, response.content.decode()
    return secret


def test_a_user_sets_up_totp_and_logs_in_again_with_a_code(client, alice):
    log_in(client, alice)
    secret = activate_totp(client)
    assert Authenticator.objects.filter(user=alice, type=Authenticator.Type.TOTP).exists()
    assert Authenticator.objects.filter(user=alice, type=Authenticator.Type.RECOVERY_CODES).exists()

    client.post(reverse("account_logout"))
    response = log_in(client, alice)
    assert response.status_code == 302
    assert response.url == reverse("mfa_authenticate")
    assert client.get(reverse("console:profile")).status_code == 302

    # A code from the next time step: allauth refuses to accept the same code twice.
    response = client.post(reverse("mfa_authenticate"), {"code": totp(secret, time.time() + 30)})
    assert response.status_code == 302
    assert client.get(reverse("console:profile")).status_code == 200


def test_a_bad_totp_code_is_refused_with_a_clear_message(client, alice):
    log_in(client, alice)
    activate_totp(client)
    client.post(reverse("account_logout"))
    log_in(client, alice)
    response = client.post(reverse("mfa_authenticate"), {"code": "000000"})
    assert response.status_code == 200
    assert "Incorrect code." in response.content.decode()
    assert client.get(reverse("console:profile")).status_code == 302


def test_a_wrong_code_during_setup_leaves_mfa_off(client, alice):
    log_in(client, alice)
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    client.get(reverse("mfa_activate_totp"))
    response = client.post(reverse("mfa_activate_totp"), {"code": "123456"})
    assert response.status_code == 200
    assert "Incorrect code." in response.content.decode()
    assert not Authenticator.objects.filter(user=alice).exists()


def test_the_profile_shows_whether_two_factor_is_on(client, alice):
    log_in(client, alice)
    assert "Set up an authenticator app" in client.get(reverse("console:profile")).content.decode()
    activate_totp(client)
    assert "Authenticator app on" in client.get(reverse("console:profile")).content.decode()
