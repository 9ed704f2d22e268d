"""The site's URLs, walked from the URLconf, and how to build each of them for a test.

Every project URL that takes arguments is either owned (another user's object answers 404:
OWNED maps its name to a function that makes alice's object and returns the URL's kwargs) or
public by design (PUBLIC, with the reason). The tests in this folder fail when a new
parameterised URL is in neither, so that no view is forgotten.
"""

import io
from dataclasses import dataclass
from datetime import timedelta

from django.core import signing
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from PIL import Image

# The project's own apps; everything else in the URLconf is Django's or allauth's.
PROJECT_APPS = {"accounts", "billing", "console", "tokens", "logs", "relay"}

# Things alice owns, named so that a test can look for them in other people's pages.
ALICE_TOKEN_NAME = "alice-private-token"
ALICE_TICKET_SUBJECT = "Alice private ticket subject"
ALICE_IP = "198.51.100.77"


@dataclass(frozen=True)
class Route:
    name: str  # with its namespaces: "tokens:edit"
    route: str  # the whole pattern, for messages: "tokens/<int:pk>/edit/"
    callback: object
    params: tuple  # the names of its arguments (positional groups count too)
    namespace: str

    @property
    def module(self):
        return getattr(self.callback, "__module__", "") or ""

    @property
    def is_admin(self):
        return self.namespace.split(":")[0] == "admin"

    @property
    def is_allauth(self):
        return self.module.split(".")[0] == "allauth"

    @property
    def is_project(self):
        """The project's own pages: not the admin site, not allauth's accounts/ pages."""
        return not self.is_admin and self.module.split(".")[0] in PROJECT_APPS

    @property
    def csrf_exempt(self):
        return bool(getattr(self.callback, "csrf_exempt", False))


def _params(pattern):
    regex = pattern.regex
    named = list(regex.groupindex)
    unnamed = [f"<group {i}>" for i in range(regex.groups - len(named))]
    return tuple(named + unnamed)


def walk(resolver=None, prefix="", namespace="", params=()):
    """Every URL pattern of the URLconf, with the arguments of its enclosing includes."""
    resolver = resolver or get_resolver()
    routes = []
    for entry in resolver.url_patterns:
        here = prefix + str(entry.pattern)
        own = params + _params(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = namespace
            if entry.namespace:
                inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
            routes += walk(entry, here, inner, own)
        elif isinstance(entry, URLPattern):
            name = entry.name or ""
            full = f"{namespace}:{name}" if namespace and name else name
            routes.append(Route(full, here, entry.callback, own, namespace))
    return routes


def project_routes():
    return [route for route in walk() if route.is_project]


def parameterised_project_routes():
    return [route for route in project_routes() if route.params]


def argless_routes():
    """Named routes without arguments: the project's and allauth's (not the admin site)."""
    return [r for r in walk() if r.name and not r.params and not r.is_admin]


# Alice's objects. Each function makes one and returns the kwargs of its URL.


def _default_line():
    from billing.models import Line

    return Line.objects.get_or_create(
        name="default", defaults={"description": "Open to everyone."}
    )[0]


def make_token(user, name=ALICE_TOKEN_NAME):
    from tokens.services import token_create

    return token_create(user=user, name=name, line=_default_line(), notify=False)[0]


def make_order(user):
    from tests.billing.test_orders import make_order as order

    return order(user)


def make_ticket(user, subject=ALICE_TICKET_SUBJECT):
    from console.support.models import Ticket, TicketMessage

    ticket = Ticket.objects.create(
        number=Ticket.new_number(),
        user=user,
        subject=subject,
        category=Ticket.Category.OTHER,
        waiting_since=timezone.now(),
    )
    TicketMessage.objects.create(ticket=ticket, author=user, body="A private message.")
    return ticket


def png_bytes():
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "navy").save(out, "PNG")
    return out.getvalue()


def make_attachment(user):
    """A screenshot on alice's ticket (MEDIA_ROOT should point at a temporary folder)."""
    from console.support.models import TicketAttachment

    message = make_ticket(user).messages.get()
    content = png_bytes()
    return TicketAttachment.objects.create(
        message=message,
        file=ContentFile(content, name="screenshot.png"),
        original_name="screenshot.png",
        content_type="image/png",
        size=len(content),
    )


def make_log(user, token=None):
    from logs.models import RequestLog
    from logs.writer import write_batch
    from tests.logs.test_pages import make_record

    token = token or make_token(user)
    record = make_record(user, token, ip=ALICE_IP, at=timezone.now() - timedelta(seconds=5))
    write_batch([record])
    return RequestLog.objects.get(pk=record.id)


def make_announcement(user=None):
    from console.announcements.models import Announcement

    return Announcement.objects.create(
        title="Public news", body="Hello everyone.", published_at=timezone.now()
    )


def unsubscribe_token(user):
    from console.lib import unsubscribe

    return signing.dumps({"u": user.pk, "k": "price"}, salt=unsubscribe.SALT, compress=True)


OWNED = {
    "console:ticket": lambda user: {"number": make_ticket(user).number},
    "console:ticket_reply": lambda user: {"number": make_ticket(user).number},
    "console:ticket_close": lambda user: {"number": make_ticket(user).number},
    "console:ticket_reopen": lambda user: {"number": make_ticket(user).number},
    "console:ticket_attachment": lambda user: {"pk": make_attachment(user).pk},
    "billing:order": lambda user: {"number": make_order(user).number},
    "billing:order_retry": lambda user: {"number": make_order(user).number},
    "billing:sandbox_pay": lambda user: {"number": make_order(user).number},
    "logs:token": lambda user: {"pk": make_token(user).pk},
    "tokens:edit": lambda user: {"pk": make_token(user).pk},
    "tokens:toggle": lambda user: {"pk": make_token(user).pk},
    "tokens:rotate": lambda user: {"pk": make_token(user).pk},
    "tokens:delete": lambda user: {"pk": make_token(user).pk},
    "logs:breakdown": lambda user: {"request_id": str(make_log(user).pk)},
}

# Parameterised URLs that are public by design: (why, kwargs for a URL that works).
PUBLIC = {
    "console:announcement": (
        "published announcements are news for everyone; drafts answer 404 except to staff",
        lambda user: {"pk": make_announcement().pk},
    ),
    "console:unsubscribe": (
        "one-click unsubscribe from an email (RFC 8058): the signed token is the credential",
        lambda user: {"token": unsubscribe_token(user)},
    ),
    "billing:webhook": (
        "payment providers' server-to-server callbacks, verified by signature; no user object",
        lambda user: {"provider": "sandbox"},
    ),
}


def url_for(route, user):
    """A URL that reaches `route`'s view, with `user`'s object where it takes one."""
    if not route.params:
        return reverse(route.name)
    if route.name in OWNED:
        return reverse(route.name, kwargs=OWNED[route.name](user))
    if route.name in PUBLIC:
        return reverse(route.name, kwargs=PUBLIC[route.name][1](user))
    raise LookupError(
        f"{route.name} ({route.route}) takes arguments: add {route.name} to the matrix "
        "(OWNED or PUBLIC in tests/security/urls.py)"
    )
