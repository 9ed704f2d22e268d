"""Shared fixtures: the users alice (owner), bob (another user) and charlie (staff), live
servers of the whole ASGI application, and a Chromium browser driven by Playwright."""

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings

from console.celery import app as celery_app

# Tests render templates without running collectstatic first.
settings.STORAGES = {
    **settings.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
settings.WHITENOISE_USE_FINDERS = True
# Live-server threads close their connections after each request, so that the test database
# can be dropped at the end.
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
# Hashing strength is not under test; a fast hasher keeps the suite quick.
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Celery runs tasks in the test process, as it does on a machine without Redis.
celery_app.conf.task_always_eager = True
celery_app.conf.task_eager_propagates = True

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(settings.BASE_DIR) / "artifacts"
PASSWORD = "correct-horse-battery"


def pytest_collection_modifyitems(config, items):
    # Browser tests last: Playwright keeps an event loop running in the main thread while its
    # browser is open, which code that starts its own loop (asyncio.run) must not meet.
    items.sort(key=lambda item: "browser" in item.keywords)
    postgres = settings.IS_POSTGRES
    redis = bool(settings.REDIS_URL)
    for item in items:
        if "postgres" in item.keywords and not postgres:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs PostgreSQL (row locking, COPY, its column types): "
                    "set DATABASE_URL=postgres://…"
                )
            )
        if "redis" in item.keywords and not redis:
            item.add_marker(pytest.mark.skip(reason="needs a real Redis: set REDIS_URL=redis://…"))


@pytest.fixture(autouse=True)
def _own_journal(settings, tmp_path):
    """Each test's gateway journals in a folder of its own, which no other test replays."""
    settings.GATEWAY_JOURNAL_DIR = tmp_path / "journal"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate limits and cached lookups do not leak from one test into the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def make_user(email, *, staff=False, name=""):
    from accounts.models import User

    user = User.objects.create_user(
        email=email, password=PASSWORD, name=name, is_staff=staff, is_superuser=staff
    )
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@pytest.fixture
def alice(db):
    return make_user("alice@example.com", name="Alice")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com", name="Bob")


@pytest.fixture
def charlie(db):
    return make_user("charlie@example.com", staff=True, name="Charlie")


@pytest.fixture
def upstream():
    """A fake OpenAI-compatible provider on 127.0.0.1 (tests/fake_upstream.py)."""
    from tests.fake_upstream import FakeUpstream

    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def default_line(db):
    from billing.models import Line

    # Made by a migration; tests on a live server truncate tables, so make it again there.
    return Line.objects.get_or_create(
        name="default", defaults={"description": "Open to everyone."}
    )[0]


@pytest.fixture
def model_price(db):
    from decimal import Decimal

    from billing.models import ModelPrice

    return ModelPrice.objects.create(
        model="gpt-4o-mini",
        vendor="OpenAI",
        model_multiplier=Decimal("0.075"),
        completion_multiplier=Decimal(4),
    )


@pytest.fixture
def prices(db):
    from decimal import Decimal

    from billing.models import ModelPrice

    ModelPrice.objects.create(
        model="gpt-4o-mini",
        vendor="OpenAI",
        model_multiplier=Decimal("0.075"),
        completion_multiplier=Decimal(4),
    )
    ModelPrice.objects.create(
        model="text-embedding-3-small",
        vendor="OpenAI",
        kind="embedding",
        model_multiplier=Decimal("0.01"),
        completion_multiplier=Decimal(1),
    )
    ModelPrice.objects.create(
        model="gpt-3.5-turbo-instruct",
        vendor="OpenAI",
        model_multiplier=Decimal("0.75"),
        completion_multiplier=Decimal("1.333333"),
    )


def streamed(response):
    """The whole body of a streaming response, async iterator or not, read in this thread."""
    from asgiref.sync import async_to_sync

    if not response.is_async:
        return b"".join(response.streaming_content)

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)()


def ledger_sum(user):
    from django.db.models import Sum

    from billing.models import LedgerEntry

    return LedgerEntry.objects.filter(account__user=user).aggregate(s=Sum("amount"))["s"] or 0


def balance_of(user):
    from billing.models import Account

    return Account.objects.get(user=user).balance


def balance_and_ledger(user):
    """The balance and the sum of its ledger, read in one statement (one snapshot), so that a
    flush committing meanwhile cannot come between the two."""
    from django.db.models import OuterRef, Subquery, Sum

    from billing.models import Account, LedgerEntry

    total = (
        LedgerEntry.objects.filter(account=OuterRef("pk"))
        .values("account")
        .annotate(s=Sum("amount"))
        .values("s")
    )
    row = Account.objects.filter(user=user).values_list("balance", Subquery(total)).get()
    return row[0], row[1] or 0


def _client_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_client(alice):
    return _client_for(alice)


@pytest.fixture
def bob_client(bob):
    return _client_for(bob)


def staff_client_for(user):
    """A client signed in as a staff user the way the admin requires in production: the user
    has an authenticator app and this session passed its code (what allauth records)."""
    from allauth.account.internal.flows.login import record_authentication
    from allauth.mfa.models import Authenticator
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
    from django.test import RequestFactory

    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    if totp is None:
        totp = TOTP.activate(user, generate_totp_secret()).instance
    client = _client_for(user)
    request = RequestFactory().get("/")
    request.session = client.session
    record_authentication(request, user, "password")
    record_authentication(request, user, "mfa", type="totp", id=totp.pk)
    request.session.save()
    return client


@pytest.fixture
def staff_client(charlie):
    return staff_client_for(charlie)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """The project's ASGI application (console and gateway) served by uvicorn in a thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No proxy headers, as in `make run`: the client is the peer.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live_site(transactional_db):
    """The whole site over HTTP, with the test database. Emails land in mail.outbox."""
    from console.asgi import application

    server = LiveServer(application).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}: apt-get install -y chromium")
    # The screenshots in artifacts/ are those of the latest run only.
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    # Playwright's sync API keeps an event loop in this thread; the tests still use the ORM.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A browser tab that records console errors (CSP violations among them)."""

    def __init__(self, page, base_url, name):
        self.page = page
        self.base_url = base_url
        self.name = name
        self.errors = []
        self.shots = 0
        # Each error names the page it happened on.
        page.on(
            "console",
            lambda msg: msg.type == "error" and self.errors.append(f"{page.url}: {msg.text}"),
        )
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        # Says which script or element broke the Content-Security-Policy, not only that it did.
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation:', e.violatedDirective, e.sourceFile, e.lineNumber, e.sample))"
        )

    def __getattr__(self, name):
        return getattr(self.page, name)

    def open(self, path):
        return self.page.goto(self.base_url + path)

    def screenshot(self, label):
        """Saves the whole page to artifacts/, after checking nothing runs off its side."""
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{self.page.url} is {overflow}px wider than the window ({label})"
        ARTIFACTS.mkdir(exist_ok=True)
        self.shots += 1
        slug = re.sub(r"[^a-z0-9]+", "-", f"{self.name}-{self.shots:02d}-{label}".lower())
        self.page.screenshot(path=str(ARTIFACTS / f"{slug}.png"), full_page=True)


@pytest.fixture
def page(browser, live_site, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Page(context.new_page(), live_site.url, request.node.name)
    yield tab
    context.close()
    assert tab.errors == [], f"the browser console reported errors: {tab.errors}"


def sign_in(page, email, password=PASSWORD):
    """Logs a browser tab in through the login form."""
    page.open("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
