"""Every page a user sees carries the security headers and no inline code: the strict
Content-Security-Policy allows scripts from this site only (and a per-request nonce), so an
inline script would be both a policy violation and a hole if the policy were ever loosened.

Pages are walked from the URLconf: every argument-less page (the project's and allauth's),
and every object page of the matrix in tests/security/urls.py."""

import runpy
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD, streamed
from tests.security.urls import (
    OWNED,
    PUBLIC,
    argless_routes,
    make_log,
    make_order,
    make_ticket,
    url_for,
    walk,
)

ROUTES = {route.name: route for route in walk() if route.name}
PAGES = sorted(route.name for route in argless_routes())
OBJECT_PAGES = sorted(OWNED) + sorted(PUBLIC)
VISITS = (
    [("anonymous", name) for name in PAGES]
    + [("alice", name) for name in PAGES + OBJECT_PAGES]
    + [("staff", name) for name in PAGES]
    + [("anonymous", "admin:login"), ("staff", "admin:index")]
)
SAFE_REFERRER_POLICIES = {
    "no-referrer",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
}


@pytest.fixture(autouse=True)
def _setup(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PAYMENTS_SANDBOX = True


def _client(who, request):
    if who == "anonymous":
        return Client(), None
    # Alice has a token, requests, an order and a ticket, so that lists render their rows.
    alice = request.getfixturevalue("alice")
    make_log(alice)
    make_order(alice)
    make_ticket(alice)
    user = alice if who == "alice" else request.getfixturevalue("charlie")
    return request.getfixturevalue("alice_client" if who == "alice" else "staff_client"), user


def _visit(who, name, request):
    client, user = _client(who, request)
    route = ROUTES[name]
    url = url_for(route, user or request.getfixturevalue("alice"))
    response = client.get(url)
    body = streamed(response) if response.streaming else response.content
    return url, response, body.decode(errors="replace")


def parse_csp(policy):
    directives = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives.setdefault(words[0].lower(), words[1:])
    return directives


def header_problems(response):
    problems = []
    policy = response.headers.get("Content-Security-Policy")
    directives = parse_csp(policy or "")
    if not policy:
        problems.append("no Content-Security-Policy")
    else:
        script = directives.get("script-src", directives.get("default-src"))
        if script is None:
            problems.append("the CSP restricts no scripts (no script-src, no default-src)")
        else:
            loose = [
                source
                for source in script
                if source not in ("'self'", "'none'") and not source.startswith("'nonce-")
            ]
            if loose:
                problems.append(f"script-src allows {' '.join(loose)}")
        objects = directives.get("object-src", directives.get("default-src"))
        if objects not in (["'none'"], ["'self'"]):
            problems.append(f"object-src is {objects}")
    frame_ancestors = directives.get("frame-ancestors")
    if frame_ancestors != ["'none'"] and response.headers.get("X-Frame-Options") != "DENY":
        problems.append("may be framed: no frame-ancestors 'none', no X-Frame-Options: DENY")
    if response["Content-Type"].startswith("text/html") and (
        response.headers.get("Cross-Origin-Opener-Policy") != "same-origin"
    ):
        problems.append("no Cross-Origin-Opener-Policy: same-origin")
    if response.headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    referrer = response.headers.get("Referrer-Policy", "")
    last = referrer.split(",")[-1].strip()
    if last not in SAFE_REFERRER_POLICIES:
        problems.append(f"Referrer-Policy is {referrer!r}")
    return problems


class Markup(HTMLParser):
    """The parts of a page a strict policy cares about."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts = []  # (attrs, has inline text)
        self.inline_code = []
        self.inline_styles = []
        self._script = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            value = (value or "").strip().lower()
            if name.startswith("on") or name.startswith("hx-on"):
                self.inline_code.append(f"<{tag} {name}=…> (an inline event handler)")
            elif name in ("href", "src", "action", "formaction") and value.startswith(
                "javascript:"
            ):
                self.inline_code.append(f"<{tag} {name}=javascript:…>")
            elif name in ("hx-vals", "hx-vars") and value.startswith(("js:", "javascript:")):
                self.inline_code.append(f"<{tag} {name}=js:…> (evaluated by htmx)")
            elif name == "style":
                self.inline_styles.append(f'<{tag} style="{value[:40]}">')
        if tag == "script":
            self._script = [attrs, False]
            self.scripts.append(self._script)
        if tag == "style" and "nonce" not in attrs:
            self.inline_styles.append("<style> without the nonce")

    def handle_data(self, data):
        if self._script is not None and data.strip():
            self._script[1] = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def markup_of(body):
    parser = Markup()
    parser.feed(body)
    parser.close()
    return parser


def script_problems(body):
    markup = markup_of(body)
    problems = list(markup.inline_code)
    for attrs, has_text in markup.scripts:
        src = attrs.get("src")
        kind = (attrs.get("type") or "").strip().lower()
        if src is None:
            if kind != "application/json":
                problems.append(f"an inline <script> {attrs or ''} (has code: {has_text})")
        elif not src.startswith("/") or src.startswith("//"):
            problems.append(f"a script from another site: {src}")
        if src is not None and has_text:
            problems.append(f"<script src={src}> with inline code as well")
    return problems


def _ids(visits):
    return [f"{who}-{name}" for who, name in visits]


def _html(response):
    return response.status_code == 200 and response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(("who", "name"), VISITS, ids=_ids(VISITS))
def test_every_page_has_the_security_headers_and_no_inline_code(who, name, request):
    url, response, body = _visit(who, name, request)
    problems = [f"headers: {problem}" for problem in header_problems(response)]
    if _html(response):
        problems += [f"inline script: {problem}" for problem in script_problems(body)]
        problems += [
            f"inline style the CSP's style-src blocks: {style}"
            for style in markup_of(body).inline_styles
        ]
    assert not problems, f"{who} GET {url} ({response.status_code}):\n" + "\n".join(problems)


def test_the_pages_are_walked():
    # The walk reaches the pages that matter; if these are missing, the walk broke.
    for name in ("console:dashboard", "tokens:list", "billing:orders", "account_login"):
        assert name in PAGES
    assert len([v for v in VISITS if v[0] == "alice"]) > 30


def test_the_policy_nonce_is_new_on_every_request(alice_client):
    nonces = []
    for _ in range(2):
        policy = parse_csp(
            alice_client.get(reverse("console:dashboard"))["Content-Security-Policy"]
        )
        nonces += [s for s in policy["script-src"] if s.startswith("'nonce-")]
    assert len(nonces) == 2 and nonces[0] != nonces[1]


def test_the_checks_catch_what_they_look_for():
    bad = (
        '<script>alert(1)</script><script src="https://cdn.example/x.js"></script>'
        '<a href="javascript:alert(1)" onclick="x()">x</a><div style="color:red"></div>'
        '<script id="d" type="application/json">{"a": 1}</script><script src="/static/a.js">'
        "</script>"
    )
    assert len(script_problems(bad)) == 4
    assert len(markup_of(bad).inline_styles) == 1
    assert parse_csp("default-src 'self'; script-src 'self' 'unsafe-inline'")["script-src"] == [
        "'self'",
        "'unsafe-inline'",
    ]


# Production: settings.py switches these on when SITE_URL is https.
PRODUCTION_KEYS = (
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_REDIRECT_EXEMPT",
)


@pytest.fixture
def production(settings, monkeypatch):
    """The security settings console/settings.py derives for an https site."""
    monkeypatch.setenv("SITE_URL", "https://console.example.com")
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS"):
        monkeypatch.delenv(name, raising=False)
    derived = runpy.run_path(str(Path(django_settings.BASE_DIR) / "console" / "settings.py"))
    missing = [key for key in PRODUCTION_KEYS if key not in derived]
    assert not missing, f"console/settings.py sets none of {missing} for an https SITE_URL"
    for key in PRODUCTION_KEYS:
        setattr(settings, key, derived[key])
    return derived


def test_an_https_site_sends_strict_transport_security(production, alice):
    assert production["SECURE_HSTS_SECONDS"] >= 31536000
    client = Client()  # a new client builds its middleware with these settings
    response = client.get(reverse("account_login"), secure=True)
    assert response.status_code == 200
    hsts = response["Strict-Transport-Security"]
    assert f"max-age={production['SECURE_HSTS_SECONDS']}" in hsts
    assert "includeSubDomains" in hsts
    assert not header_problems(response)

    plain = Client().get(reverse("console:dashboard"))
    assert plain.status_code == 301 and plain.url.startswith("https://")
    # The load balancer's health check is answered over plain HTTP.
    assert Client().get(reverse("healthz")).status_code == 200


def test_an_https_site_sets_secure_cookies(production, alice):
    client = Client()
    page = client.get(reverse("account_login"), secure=True)
    assert page.cookies["csrftoken"]["secure"]
    response = client.post(
        reverse("account_login"),
        {"login": "alice@example.com", "password": PASSWORD},
        secure=True,
    )
    assert response.status_code == 302
    cookie = response.cookies[django_settings.SESSION_COOKIE_NAME]
    assert cookie["secure"] and cookie["httponly"]


def test_the_pages_that_show_a_new_api_key_are_not_stored(alice_client, alice):
    """The key is shown once: the browser must not keep the page in its cache (or show it
    again from history) for whoever uses the machine next."""
    from tests.security.urls import make_token

    created = alice_client.post(
        reverse("tokens:create"),
        {"name": "fresh", "line": make_token(alice).line_id, "unlimited_quota": "on"},
    )
    rotated = alice_client.post(reverse("tokens:rotate", args=[make_token(alice, "old").pk]))
    for what, response in (("tokens:create", created), ("tokens:rotate", rotated)):
        assert response.status_code == 200 and "sk-" in response.content.decode(), what
        cache_control = response.get("Cache-Control", "")
        assert "no-store" in cache_control, (
            f"{what} shows a new API key with Cache-Control {cache_control!r}; "
            "it should say no-store"
        )
