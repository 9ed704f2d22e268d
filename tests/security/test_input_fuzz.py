"""No input answers a 500: fuzzing generated from the URLconf and from the forms the pages render.

Every project page (tests/security/urls.py walks the URLconf and builds alice's objects' URLs)
is opened, signed in as alice and anonymously. The <form>s it renders (their fields, with the
values the page filled in), the htmx requests of its elements and the query strings of its
links are the targets; each is sent every extreme value in every field, one field at a time,
then Hypothesis mixes them: numbers no decimal arithmetic holds, NUL and control characters,
dates at the ends of the calendar (in time zones on either side of UTC), wrong types, huge
and odd Unicode text. Path arguments get the same treatment. A new form or link is fuzzed the
day it is rendered; a project URL that is no target fails the coverage test until it is, or
until NO_INPUT says why it takes none.

SQLite stores a NUL in text where PostgreSQL refuses it with an error, so the database here
refuses NUL as PostgreSQL does: a SQLite run finds what production would. The test client
raises the view's exception, so a failure shows what raised and the input that made it.
"""

from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
from django.db import DataError, connection
from django.test import Client
from django.urls import Resolver404, resolve, reverse
from hypothesis import given
from hypothesis import strategies as st

from accounts.models import User
from tests.fuzzing import fuzz_settings
from tests.security.urls import (
    make_log,
    make_order,
    make_ticket,
    make_token,
    project_routes,
    url_for,
)

EXAMPLES = 25  # per target, after the sweep of every extreme value through every field
FUZZ = fuzz_settings(EXAMPLES)

# What production saw, and its relatives. Lone surrogates cannot be sent as text (the client
# encodes UTF-8); the rest of Unicode's corners can.
EXTREMES = [
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" * 30,
    "-" + "9" * 30 + ".99",
    "1e-400",
    "1e999999999999999999",
    "-1",
    "0",
    "",
    "\x00",
    "T-\x00",
    "a\x00b",
    "\x01\x08\x1b\x7f",
    "0001-01-01",
    "0001-01-01T00:00",
    "9999-12-31",
    "9999-12-31T23:59",
    "9999-12-31T23:59:59.999999-12:00",
    "0001-01-01T00:00+14:00",
    "²",
    "١٢٣",
    "𝟗" * 20,
    "\ufeff\u202e\ufffd\U0010ffff",
    "x" * 100_000,
]
# Users' time zones on either side of UTC, where the ends of the calendar overflow.
ZONES = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
# Path arguments: str converters take anything but a slash; int converters only digits.
PATH_VALUES = {
    "str": ["\x00", "T-\x00", "a\x00b", "\x01", " ", "%", "..", "é𝟗", "x" * 300, "1e309"],
    "int": ["0", "9" * 19, "9" * 30, "0" * 40 + "1"],
}

# Project URLs that are no target of any form, htmx request or link: why they take no input.
PATH_ONLY = "its only input is its path (test_no_path_argument_answers_a_500)"
NO_INPUT = {
    "console:help": "a static page",
    "console:announcement_feed": "an Atom feed of the latest announcements; no parameters",
    "healthz": "for load balancers; no parameters",
    "logs:staff": "staff only (404 to everyone else); no parameters",
    "tokens:list": "no parameters",
    "logs:token": PATH_ONLY,
    "console:ticket": PATH_ONLY,
    "console:ticket_reopen": f"a button with no fields, shown on a closed ticket; {PATH_ONLY}",
    "billing:order_retry": f"a button with no fields, shown on a failed order; {PATH_ONLY}",
    "console:announcement": PATH_ONLY,
    "console:unsubscribe": f"one-click unsubscribe: a POST with no fields; {PATH_ONLY}",
    "console:ticket_attachment": f"serves a file; {PATH_ONLY}",
    "billing:webhook": "server-to-server JSON, verified by signature before it is read "
    f"(tests/billing/test_webhooks.py); {PATH_ONLY}",
    "billing:sandbox_pay": "its form pays by calling our webhook over HTTP, which the test "
    f"client cannot serve; {PATH_ONLY}",
}
# Requests no page renders but other sites or emails make: (method, fields, who makes them).
ELSEWHERE = {
    "billing:order": ("GET", {"paid": ["1"]}, "the payment provider's return link"),
    "billing:orders": ("GET", {"page": ["2"]}, "pagination links, past 25 orders"),
}
# Forms that are not fuzzed, by the URL name they post to: why.
NOT_FUZZED = {"billing:sandbox_pay": NO_INPUT["billing:sandbox_pay"]}

PROJECT_ROUTES = project_routes()
PAGES = [route for route in PROJECT_ROUTES if route.name]


# Reading a page


class Target:
    """A request a page makes: method, path, and each field's values as the page fills them."""

    def __init__(self, method, url, fields, origin):
        self.method = method
        self.url = url
        self.fields = fields  # name → list of values (a checked box group has several)
        self.origin = origin  # what on the page makes it, for messages

    @property
    def route(self):
        try:
            return resolve(urlsplit(self.url).path).view_name
        except Resolver404:
            return None

    def key(self):
        return (self.method, urlsplit(self.url).path, tuple(sorted(self.fields)))

    def __repr__(self):
        return f"{self.method} {self.url} ({self.origin})"


# What an empty required text field gets, so that the other fields' odd values reach the code
# past the form's validation: a name, a subject, a message and an amount of dollars alike.
FILLER = "5"


class PageReader(HTMLParser):
    """The targets on a page: its forms, its elements' htmx requests, its links' query strings.
    Fields are filled as a person would: a radio choice made, required text filled in."""

    def __init__(self, page_url):
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        self.targets = []
        self.form = None  # the open form's Target
        self.select = None  # (name, options, selected) of the open <select>
        self.textarea = None

    def _url(self, href):
        return urljoin(self.page_url, href or "")

    def _field(self, name, value):
        if self.form is not None and name:
            self.form.fields.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "form":
            method = (attrs.get("method") or "get").upper()
            action = self._url(attrs.get("action"))
            self.form = Target(method, action, {}, f"<form> on {self.page_url}")
            self.targets.append(self.form)
        elif tag == "input":
            kind = (attrs.get("type") or "text").lower()
            if kind in {"submit", "button", "image", "reset", "file"}:
                pass  # files are judged by content: tests/support/test_tickets.py
            elif kind in {"checkbox", "radio"}:
                if "checked" in attrs:
                    self._field(name, attrs.get("value", "on"))
                elif self.form is not None and name:
                    values = self.form.fields.setdefault(name, [])
                    if kind == "radio" and not values:
                        values.append(attrs.get("value", "on"))  # the first choice
            elif kind in {"text", "email", "number"} and "required" in attrs:
                self._field(name, attrs.get("value") or FILLER)
            else:
                self._field(name, attrs.get("value", ""))
        elif tag == "select":
            self.select = (name, [], [])
        elif tag == "option" and self.select is not None:
            value = attrs.get("value", "")
            self.select[1].append(value)
            if "selected" in attrs:
                self.select[2].append(value)
        elif tag == "textarea":
            self.textarea = (name, [], "required" in attrs)
        elif tag == "a" and "?" in (attrs.get("href") or ""):
            url = self._url(attrs["href"])
            query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
            path = url.split("?")[0]
            self.targets.append(
                Target(
                    "GET", path, {k: [v] for k, v in query.items()}, f"a link on {self.page_url}"
                )
            )
        for attr, href in attrs.items():  # URLs that page code requests: data-live-url="…"
            if attr.startswith("data-") and attr.endswith("url") and href:
                url = self._url(href)
                query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
                fields = {k: [v] for k, v in query.items()}
                self.targets.append(Target("GET", url.split("?")[0], fields, f"{attr} on {url}"))
        for verb in ("get", "post"):
            href = attrs.get(f"hx-{verb}")
            if href and tag != "form":
                url = self._url(href)
                fields = dict(self.form.fields) if self.form is not None else {}
                if name:
                    fields.setdefault(name, [attrs.get("value", "")])
                query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
                fields.update({k: [v] for k, v in query.items()})
                self.targets.append(
                    Target(verb.upper(), url.split("?")[0], fields, f"hx-{verb} on {self.page_url}")
                )

    def handle_data(self, data):
        if self.textarea is not None:
            self.textarea[1].append(data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.form = None
        elif tag == "select" and self.select is not None:
            name, options, selected = self.select
            self._field(name, (selected or options or [""])[0])
            self.select = None
        elif tag == "textarea" and self.textarea is not None:
            name, text, required = self.textarea
            self._field(name, "".join(text).strip() or (FILLER if required else ""))
            self.textarea = None


def targets_on(client, url):
    """The page's targets on project URLs (what posts to allauth or the admin is theirs)."""
    response = client.get(url)
    if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
        return []
    reader = PageReader(url)
    reader.feed(response.content.decode())
    project = {route.name for route in PROJECT_ROUTES}
    return [t for t in reader.targets if t.route in project and t.route not in NOT_FUZZED]


# What is sent


def odd_value():
    return (
        st.sampled_from(EXTREMES)
        | st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
        | st.integers().map(str)
        | st.floats().map(repr)
    )


def submissions(target):
    """Each field as the page filled it, an odd value, several odd values, or left out."""
    fields = {}
    for name, values in target.fields.items():
        fields[name] = st.one_of(
            st.just(values),
            odd_value().map(lambda value: [value]),
            st.lists(odd_value(), min_size=2, max_size=3),
            st.just(None),
        )
    return st.fixed_dictionaries(fields)


def check(client, target, data):
    """Sends the data; fails, saying what was sent, on a 500 or an exception."""
    data = {name: values for name, values in data.items() if values is not None}
    shown = {k: (v if len(repr(v)) < 200 else f"{repr(v)[:200]}…") for k, v in data.items()}
    try:
        if target.method == "GET":
            response = client.get(target.url, data)
        else:
            response = client.post(target.url, data)
    except Exception as error:
        raise AssertionError(f"{target} raised {error!r} on {shown}") from error
    assert response.status_code < 500, f"{target} answered {response.status_code} to {shown}"


def refuse_nul_as_postgresql_does(execute, sql, params, many, context):
    rows = params if many else [params]
    for row in rows or ():
        for value in (row.values() if isinstance(row, dict) else row) or ():
            if isinstance(value, str) and "\x00" in value:
                raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    return execute(sql, params, many, context)


@pytest.fixture
def site(settings, tmp_path, alice, default_line, prices):
    """Alice has a token, an order, a ticket and a logged request, so that every page renders
    its every form (a token's buttons, the ticket form's order and token questions)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PAYMENTS_SANDBOX = True  # a payment method to choose on the recharge form
    make_log(alice, make_token(alice))
    make_order(alice)
    make_ticket(alice)
    with connection.execute_wrapper(refuse_nul_as_postgresql_does):
        yield


def set_zone(user, zone):
    User.objects.filter(pk=user.pk).update(time_zone=zone)


def _client(user):
    client = Client()  # raises what a view raises: the failure shows it
    if user is not None:
        client.force_login(user)
    return client


# The tests


@pytest.mark.parametrize("who", ["alice", "anonymous"])
@pytest.mark.parametrize("page", PAGES, ids=[route.name for route in PAGES])
def test_no_input_on_a_page_answers_a_500(page, who, site, alice):
    user = alice if who == "alice" else None
    url = url_for(page, alice)
    client = _client(user)
    targets = list({t.key(): t for t in targets_on(client, url)}.values())
    if page.name in ELSEWHERE:
        method, fields, origin = ELSEWHERE[page.name]
        targets.append(Target(method, url, fields, origin))
    for target in targets:
        _sweep(client, target, user)
        _fuzz(client, target, user)


def _sweep(client, target, user):
    """Every extreme value through every field, one at a time, the others as the page had them;
    dates in the time zones where they overflow."""
    for name in target.fields:
        for value in [*EXTREMES, ["1e309", "\x00"]]:  # and a list where one value is expected
            dated = isinstance(value, str) and value[:4] in {"0001", "9999"}
            zones = ZONES[1:] if dated else ZONES[:1]
            for zone in zones if user else ["UTC"]:
                if user:
                    set_zone(user, zone)
                data = {**target.fields, name: value if isinstance(value, list) else [value]}
                check(client, target, data)


def _fuzz(client, target, user):
    @FUZZ
    @given(data=submissions(target), zone=st.sampled_from(ZONES))
    def run(data, zone):
        if user:
            set_zone(user, zone)
        check(client, target, data)

    run()


PARAMETERISED = [route for route in PROJECT_ROUTES if route.params]


@pytest.mark.parametrize("route", PARAMETERISED, ids=[route.name for route in PARAMETERISED])
def test_no_path_argument_answers_a_500(route, site, alice):
    client = _client(alice)
    kwargs = resolve(urlsplit(url_for(route, alice)).path).kwargs
    for name in kwargs:
        converter = "int" if f"<int:{name}>" in route.route else "str"
        for value in PATH_VALUES[converter]:
            url = reverse(route.name, kwargs={**kwargs, name: value})
            for method in ("GET", "POST"):
                check(client, Target(method, url, {}, f"{name}={value!r}"), {})


def test_every_project_url_is_fuzzed_or_takes_no_input(site, alice):
    """A URL is fuzzed when some page renders a form, an htmx request or a link to it."""
    found = set()
    for who in (alice, None):
        client = _client(who)
        for page in PAGES:
            found |= {t.route for t in targets_on(client, url_for(page, alice))}
    names = {route.name for route in PAGES}
    missing = sorted(names - found - NO_INPUT.keys() - NOT_FUZZED.keys() - ELSEWHERE.keys())
    assert not missing, "\n".join(
        f"{name}: no page renders a form, htmx request or link to it, so nothing fuzzes its "
        "input. Render one, or add it to NO_INPUT in tests/security/test_input_fuzz.py with why "
        "it takes none"
        for name in missing
    )
    stale = sorted(found & NO_INPUT.keys())
    assert not stale, f"now fuzzed through a page, remove from NO_INPUT: {stale}"
