"""Signed one-click unsubscribe links (RFC 8058): they work without logging in, for one user
and one kind of email, and expire."""

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "console.unsubscribe"
MAX_AGE = 180 * 24 * 3600  # links in old emails keep working for half a year
KINDS = {
    "price": ("price_emails", "price-change emails"),
    "maintenance": ("maintenance_emails", "maintenance notices"),
    "low_balance": ("low_balance_emails", "low-balance alerts"),
    "security": ("security_emails", "security notices"),
}


def unsubscribe_url(user, kind):
    token = signing.dumps({"u": user.pk, "k": kind}, salt=SALT, compress=True)
    return settings.SITE_URL + reverse("console:unsubscribe", args=[token])


def unsubscribe_urls(users, kind):
    """{user id: link} for a batch of bulk mail: the same links as unsubscribe_url's, with
    the address looked up and the signer made once (a token is URL-safe: it goes into the
    path as it is)."""
    address = settings.SITE_URL + reverse("console:unsubscribe", args=["TOKEN"])
    before, _placeholder, after = address.partition("TOKEN")
    signer = signing.TimestampSigner(salt=SALT)
    return {
        user.pk: before + signer.sign_object({"u": user.pk, "k": kind}, compress=True) + after
        for user in users
    }


def headers(user, kind, url=None):
    """The List-Unsubscribe headers of a bulk email."""
    return {
        "List-Unsubscribe": f"<{url or unsubscribe_url(user, kind)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


class BadLink(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


def read(token):
    """(user id, kind) from a link, or BadLink saying what is wrong with it."""
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE)
    except signing.SignatureExpired:
        raise BadLink("This unsubscribe link has expired.") from None
    except signing.BadSignature:
        raise BadLink(
            "This unsubscribe link is not valid: it may have been cut or changed."
        ) from None
    if (
        not isinstance(data, dict)
        or data.get("k") not in KINDS
        or not isinstance(data.get("u"), int)
    ):
        raise BadLink("This unsubscribe link is not valid.")
    return data["u"], data["k"]
