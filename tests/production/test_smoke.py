"""The production layout of README.md, run for real on this machine.

A fresh PostgreSQL database and Redis database; the README's once-per-release commands
(migrate, collectstatic, check --deploy); then every line of the Procfile as its own process
(two ASGI workers, a Celery worker, Celery beat) with production settings: DEBUG off, an https
SITE_URL behind a proxy that says so, SMTP email. A short journey goes through the console and
the gateway over HTTP; then the test checks that email went through the worker, that beat ran
a periodic job, that a token change reached both web workers, and that everything stops
cleanly with nothing lost.
"""

import decimal
import email.policy
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from decimal import Decimal
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import openai
import psutil
import pytest
from django.conf import settings

from tests.accounts.test_mfa import totp
from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-mini"
USER, STAFF = "first.customer@example.com", "ops@example.com"
SECRET = "a-long-enough-secret"
PUBLIC_HOST = "switchboard.example.com"
STAFF_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # the staff member's authenticator app


def readme_release_commands():
    """The commands README.md says to run once per release, without the install step."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"Set up once per release:\s*```sh\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    return [c for c in commands if c and "pip install" not in c]


def procfile():
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def seed(base_url, key):
    """Staff's set-up: a price, a channel to the upstream, a scheduled price change."""
    return f"""
from decimal import Decimal
from datetime import timedelta
from django.utils import timezone
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP
from accounts.models import User
from billing import services
from billing.models import Line, ModelPrice
from relay.models import Channel

staff = User.objects.create_superuser(email="{STAFF}", password="{SECRET}")
EmailAddress.objects.create(user=staff, email=staff.email, verified=True, primary=True)
TOTP.activate(staff, "{STAFF_TOTP}")
price = ModelPrice.objects.create(
    model="{MODEL}", vendor="OpenAI", model_multiplier=Decimal("0.075"),
    completion_multiplier=Decimal(4),
)
channel = Channel(name="upstream", type=Channel.Type.OPENAI, base_url="{base_url}",
                  model_names=["{MODEL}"])
channel.set_key("{key}")
channel.save()
channel.lines.set(Line.objects.filter(name="default"))
# A price change that falls due in a few seconds: Celery beat applies it.
services.price_change(
    target=price, new_values={{"model_multiplier": Decimal("0.09")}},
    reason="Scheduled for the smoke test.", staff_user=staff,
    effective_at=timezone.now() + timedelta(seconds=5),
)
"""


class Forms(HTMLParser):
    """The POST forms in a page's main part (not the header's sign-out), each with its action
    and the values a browser would send."""

    def __init__(self, page):
        super().__init__()
        self.page = page
        self.in_main = False
        self.forms = []  # [(action, fields)]
        self.fields = None
        self.select = None
        self.textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "main":
            self.in_main = True
        post = (a.get("method") or "").lower() == "post"
        if tag == "form" and post and self.in_main:
            self.fields = {}
            self.forms.append((a.get("action") or self.page, self.fields))
        if self.fields is None:
            return
        kind = (a.get("type") or "text").lower()
        if tag == "input" and a.get("name") and kind not in {"submit", "button", "file"}:
            if kind in {"checkbox", "radio"}:
                if "checked" in a:
                    self.fields.setdefault(a["name"], a.get("value", "on"))
            else:
                self.fields[a["name"]] = a.get("value") or ""
        elif tag == "select":
            self.select = a.get("name")
        elif tag == "option" and self.select:
            if "selected" in a or self.select not in self.fields:
                self.fields[self.select] = a.get("value", "")
        elif tag == "textarea":
            self.textarea = a.get("name")
            self.fields[self.textarea] = ""

    def handle_data(self, data):
        if self.fields is not None and self.textarea:
            self.fields[self.textarea] += data

    def handle_endtag(self, tag):
        if tag == "main":
            self.in_main = False
        if tag == "form":
            self.fields = None
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None


class Visitor:
    """A browser behind the TLS proxy: says https, keeps its (secure) cookies, sends CSRF."""

    def __init__(self, base):
        self.base = base
        self.host = PUBLIC_HOST  # the proxy passes on the name the browser asked for
        self.cookies = {}
        self.http = httpx.Client(base_url=base, timeout=20)

    def request(self, method, path, **kwargs):
        headers = {
            "Host": self.host,
            "X-Forwarded-Proto": "https",
            "Origin": f"https://{self.host}",
            "Referer": f"https://{self.host}{path}",
            **kwargs.pop("headers", {}),
        }
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.http.request(method, path, headers=headers, **kwargs)
        for line in response.headers.get_list("set-cookie"):
            for name, morsel in SimpleCookie(line).items():
                self.cookies[name] = morsel.value
        return response

    def get(self, path):
        return self.request("GET", path)

    def submit(self, path, action=None, **values):
        """Fills a form of the page at `path` (its first, or the one posting to `action`) as a
        browser would, with `values` typed in, and sends it."""
        page = self.get(path)
        assert page.status_code == 200, (path, page.status_code)
        parser = Forms(path)
        parser.feed(page.text)
        mine = [f for f in parser.forms if f[0] == (action or path)]
        found = mine or ([] if action else parser.forms)
        assert found, f"no form posting to {action or 'anywhere'} on {path}"
        target, fields = found[0]
        return self.request("POST", target, data={**fields, **values})


class Production:
    """The Procfile's processes, each in its own process group, with their logs."""

    def __init__(self, env, logs):
        self.env, self.logs, self.processes = env, logs, {}

    def start(self):
        for name, command in procfile().items():
            log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
            self.processes[name] = (
                subprocess.Popen(
                    ["sh", "-c", f"exec {command}"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )

    def log(self, name):
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def web_workers(self):
        # uvicorn's worker processes, not multiprocessing's resource tracker beside them.
        children = psutil.Process(self.processes["web"][0].pid).children()
        return [p for p in children if "spawn_main" in " ".join(p.cmdline())]

    def stop(self, timeout=40):
        """SIGTERM to each process, as a supervisor does; their exit codes."""
        codes = {}
        for process, _log in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, (process, log) in self.processes.items():
            try:
                codes[name] = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[name] = "killed after a timeout"
            log.close()
        return codes

    def leftovers(self):
        alive = []
        for name, (process, _log) in self.processes.items():
            try:
                os.killpg(process.pid, 0)
                alive.append(name)
            except ProcessLookupError:
                pass
        return alive


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def manage(env, *command):
    done = subprocess.run(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"manage.py {' '.join(command)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def databases():
    """A fresh PostgreSQL database and an empty Redis database, dropped afterwards."""
    import psycopg
    import redis

    server = settings.DATABASES["default"]
    name = f"switchboard_smoke_{secrets.token_hex(4)}"
    admin_url = (
        f"postgresql://{server['USER']}:{server['PASSWORD']}@{server['HOST']}:{server['PORT']}"
        "/postgres"
    )
    with psycopg.connect(admin_url, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    redis_url = re.sub(r"/\d*$", "", settings.REDIS_URL.rstrip("/")) + "/7"
    redis.Redis.from_url(redis_url).flushdb()
    yield admin_url.rsplit("/", 1)[0] + f"/{name}", redis_url
    with psycopg.connect(admin_url, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    redis.Redis.from_url(redis_url).flushdb()


def test_the_production_layout_serves_mails_schedules_and_stops_cleanly(databases, tmp_path):
    database_url, redis_url = databases
    sink, upstream = SmtpSink().start(), FakeUpstream().start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = production_environment(database_url, redis_url, port, sink.port, tmp_path)
    production = Production(env, tmp_path)
    try:
        run_the_release_commands(env)
        set_up_a_price_and_a_channel(env, upstream)
        start_the_procfile(production, base)
        visitor = Visitor(base)
        check_the_site_answers_as_production(visitor, base)
        sign_up_by_the_emailed_link(visitor, sink)
        staff = sign_in_to_admin_with_the_authenticator_code(base)
        put_ten_dollars_on_the_account_from_admin(staff, visitor)
        token_id, key = create_a_token(visitor)
        call_the_api_with_the_official_client(visitor, base, key)
        answered = disable_the_token_on_both_web_workers(visitor, production, port, token_id, key)
        wait_for_beat_to_apply_the_scheduled_price_change(visitor, production)
    finally:
        codes = production.stop()
        sink.stop()
        upstream.stop()

    check_every_process_stopped_cleanly(production, codes)
    check_nothing_was_lost(database_url, answered)


def production_environment(database_url, redis_url, port, smtp_port, tmp_path):
    """Production settings: DEBUG off, an https SITE_URL behind a proxy, SMTP email."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "SITE_URL": f"https://{PUBLIC_HOST}",
        # The health check asks by address, as a load balancer does.
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "SUPPORT_EMAIL": "support@switchboard.example.com",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "CELERY_CONCURRENCY": "2",
        "TRUSTED_PROXIES": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }


def run_the_release_commands(env):
    """Once per release, as the README says; the deploy check finds nothing."""
    for command in readme_release_commands():
        args = command.split()
        assert args[:2] == ["python", "manage.py"], command
        output = manage(env, *args[2:])
        if "check" in args:
            assert "System check identified no issues" in output, output


def set_up_a_price_and_a_channel(env, upstream):
    manage(env, "shell", "-c", seed(upstream.url, upstream.key))


def start_the_procfile(production, base):
    production.start()
    wait_for("the web workers", lambda: _healthy(base), 60)
    assert len(production.web_workers()) == 2


def check_the_site_answers_as_production(visitor, base):
    # Only the site's own name (and the configured health-check address) is answered.
    assert visitor.request("GET", "/", headers={"Host": "localhost:6666"}).status_code == 400
    # DEBUG is off: the site's own 404 page, and HSTS on every secure answer.
    missing = visitor.get("/no-such-page/")
    assert missing.status_code == 404 and "Page not found" in missing.text
    assert "max-age=" in missing.headers["strict-transport-security"]
    # Plain HTTP is sent to https.
    assert httpx.get(f"{base}/pricing/").status_code == 301
    # collectstatic's hashed files are what the pages use, and they are served.
    css = re.search(r'href="(/static/css/site\.[0-9a-f]{12}\.css)"', missing.text).group(1)
    assert visitor.get(css).status_code == 200


def sign_up_by_the_emailed_link(visitor, sink):
    """Sign up: the verification email goes out through the Celery worker over SMTP."""
    response = visitor.submit("/accounts/signup/", email=USER, password1=SECRET, password2=SECRET)
    assert response.status_code == 302, response.text[:2000]
    mail = wait_for("the verification email", lambda: _mail_to(sink, USER), 30)
    link = re.search(r"https://\S+/accounts/confirm-email/\S+/", mail).group(0)
    confirm = urlsplit(link).path
    assert visitor.submit(confirm).status_code == 302
    assert "Get started in three steps" in visitor.get("/").text


def sign_in_to_admin_with_the_authenticator_code(base):
    """The admin sends staff to the one sign-in, which asks for the authenticator code; the
    admin stays shut until it is given. Returns the signed-in staff member."""
    staff = Visitor(base)
    assert staff.get("/admin/").headers["location"].startswith("/admin/login/")
    signed_in = staff.submit("/accounts/login/", login=STAFF, password=SECRET)
    assert signed_in.headers["location"] == "/accounts/2fa/authenticate/"
    assert staff.get("/admin/billing/account/").status_code == 302
    coded = staff.submit("/accounts/2fa/authenticate/", code=totp(STAFF_TOTP))
    assert coded.status_code == 302, coded.text[:2000]
    return staff


def put_ten_dollars_on_the_account_from_admin(staff, visitor):
    accounts = staff.get("/admin/billing/account/?" + urlencode({"q": USER})).text
    account_id = re.search(r'name="_selected_action" value="(\d+)"', accounts).group(1)
    adjusted = staff.request(
        "POST",
        "/admin/billing/account/",
        data={
            "csrfmiddlewaretoken": staff.cookies["csrftoken"],
            "action": "adjust_balance",
            "_selected_action": account_id,
            "apply": "1",
            "amount": "10",
            "reason": "Bank transfer, invoice 42",
        },
    )
    assert adjusted.status_code == 302, adjusted.text[:2000]
    assert "$10.00" in visitor.get("/billing/").text


def create_a_token(visitor):
    """A token with the defaults. Returns its id and its key."""
    created = visitor.submit("/tokens/new/", name="Production app")
    key = re.search(r'<code id="new-key">(sk-[^<]+)</code>', created.text).group(1)
    token_id = re.search(r"/tokens/(\d+)/edit/", visitor.get("/tokens/").text).group(1)
    return token_id, key


def call_the_api_with_the_official_client(visitor, base, key):
    """A chat and a stream, both of which reach the request log."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}]
    )
    assert chat.choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    wait_for("the requests in the log", lambda: visitor.get("/logs/").text.count(MODEL) >= 2, 15)


def disable_the_token_on_both_web_workers(visitor, production, port, token_id, key):
    """A token change reaches both web workers: hold a connection to each, use the key on
    both (so that each caches it), disable the token, and both refuse it at once. Returns
    the status of every call made, for the count of logged requests at the end."""
    connections = _one_connection_per_worker(port, production.web_workers())
    answered = [_call(connection, key)[0] for connection in connections.values()]
    assert answered == [200] * len(connections)
    disabled = visitor.submit(f"/logs/tokens/{token_id}/", action=f"/tokens/{token_id}/toggle/")
    assert disabled.status_code == 302
    for pid, connection in connections.items():
        body = wait_for(
            f"worker {pid} to refuse the disabled token",
            lambda c=connection: _refused(c, key, answered),
            5,
        )
        assert body["error"]["code"] == "token_disabled", body
        connection.close()
    return answered


def wait_for_beat_to_apply_the_scheduled_price_change(visitor, production):
    """Celery beat applies the price change when it falls due (its jobs run every minute)."""
    wait_for(
        "beat to apply the scheduled price change",
        lambda: ">0.09<" in visitor.get("/pricing/").text.replace(" ", ""),
        120,
    )
    assert "apply_due_price_adjustments" in production.log("beat")


def check_every_process_stopped_cleanly(production, codes):
    assert codes == {name: 0 for name in procfile()}, codes
    # Helpers such as multiprocessing's resource tracker follow their parent out shortly.
    wait_for("every process of the group to end", lambda: not production.leftovers(), 10)
    for name in procfile():
        assert "Traceback" not in production.log(name), production.log(name)[-5000:]


def check_nothing_was_lost(database_url, answered):
    """Every request logged, every hold given back, and each answer charged exactly its
    price: the fake upstream's usage at the multipliers of the moment (the scheduled change
    may have applied before some of them)."""
    rows, holds, balance, held, ledger = _money_after_the_stop(database_url)
    assert len(rows) == 2 + answered.count(200)
    for prompt, completion, model, completion_multiplier, line, cost in rows:
        assert (prompt, completion) in {(12, 5), (12, 4)}  # a chat, a stream
        assert (model, completion_multiplier, line) in {
            (Decimal("0.075"), 4, 1),
            (Decimal("0.09"), 4, 1),
        }
        assert cost == round_half_up((prompt + completion * 4) * model * 2)
    assert holds == 0 and held == 0
    assert balance == ledger == 10_000_000 - sum(row[-1] for row in rows)


def _money_after_the_stop(database_url):
    """The logged requests that were answered, the count of holds, and the customer's
    balance, held amount and ledger sum."""
    import psycopg

    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "SELECT prompt_tokens, completion_tokens, model_multiplier, completion_multiplier,"
            " line_multiplier, cost FROM logs_requestlog WHERE status = 200"
        ).fetchall()
        (holds,) = db.execute("SELECT count(*) FROM billing_hold").fetchone()
        balance, held, ledger = db.execute(
            "SELECT a.balance, a.held, (SELECT sum(amount) FROM billing_ledgerentry e"
            " WHERE e.account_id = a.user_id) FROM billing_account a"
            " JOIN accounts_user u ON u.id = a.user_id WHERE u.email = %s",
            [USER],
        ).fetchall()[0]
    return rows, holds, balance, held, ledger


def round_half_up(value):
    return int(value.quantize(Decimal(1), rounding=decimal.ROUND_HALF_UP))


def _healthy(base):
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _mail_to(sink, address):
    for item in list(sink.messages):
        if address in item["to"]:
            raw = item["message"].as_bytes()
            message = email.message_from_bytes(raw, policy=email.policy.default)
            return message.get_body(("plain",)).get_content()
    return None


def _one_connection_per_worker(port, workers):
    """Keep-alive connections, one held by each web worker process (found by its socket)."""
    pids = {worker.pid for worker in workers}
    held, spare = {}, []
    for _attempt in range(200):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        local = connection.sock.getsockname()[1]
        owner = next(
            (
                pid
                for pid in pids
                for c in psutil.Process(pid).net_connections("tcp")
                if c.raddr and c.raddr.port == local
            ),
            None,
        )
        if owner is not None and owner not in held:
            held[owner] = connection
        else:
            spare.append(connection)
        if len(held) == len(pids):
            break
    for connection in spare:
        connection.close()
    assert set(held) == pids, "could not reach every web worker"
    return held


def _call(connection, key):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _refused(connection, key, answered):
    status, body = _call(connection, key)
    answered.append(status)
    return body if status == 403 else None
