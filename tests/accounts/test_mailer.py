"""The mailer sends a batch the quick way (templates rendered once, MIME bytes filled in per
recipient, one SMTP connection, commands pipelined where the server offers it) and each email
reads exactly as the one Django would have built for that recipient alone."""

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from smtplib import SMTPDataError

import pytest
from django.conf import settings as django_settings
from django.core.mail import EmailMultiAlternatives
from django.db import connection
from django.test.signals import template_rendered

from accounts import emails
from accounts.models import EmailDelivery
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.django_db

# A small email of three templates, and one that changes a personal value as it prints it.
PROBE = {
    "emails/probe-subject.html": "{% autoescape off %}News for {{ team }}"
    "{% if name %}, {{ name }}{% endif %}{% endautoescape %}",
    "emails/probe-body-text.html": "{% autoescape off %}Hello{% if name %} {{ name }}{% endif %},"
    "\n\n{{ news }}\n\nLeave: {{ link }}\n-- {{ site_name }}{% endautoescape %}",
    "emails/probe-body-html.html": '{% extends "emails/base.html" %}{% block content %}'
    "<p>Hello{% if name %} {{ name }}{% endif %},</p><p>{{ news }}</p>"
    '<p><a href="{{ link }}">Leave</a></p>{% endblock %}',
    "emails/shout-subject.html": "News",
    "emails/shout-body-text.html": "HELLO {{ name|upper }}",
    "emails/shout-body-html.html": "<p>HELLO {{ name|upper }}</p>",
}
LONG = "Prices change on the first of the month → " + "every model, " * 12
CYRILLIC = "Цены меняются первого числа каждого месяца. " * 4
PEOPLE = [
    ("zoe@example.com", 'Zoë <b>&"co"'),
    ("nameless@example.com", ""),
    ("ada@example.com", "Ada"),
]


@pytest.fixture
def probe_templates(settings):
    """The site's templates, and the probe emails in front of them."""
    engine = dict(settings.TEMPLATES[0])
    engine["APP_DIRS"] = False
    engine["OPTIONS"] = {
        **engine["OPTIONS"],
        "loaders": [
            ("django.template.loaders.locmem.Loader", PROBE),
            "django.template.loaders.filesystem.Loader",
            "django.template.loaders.app_directories.Loader",
        ],
    }
    settings.TEMPLATES = [engine]


@pytest.fixture(params=[False, True], ids=["one command at a time", "pipelined"])
def mailbox(request, settings):
    """A real SMTP server on 127.0.0.1 as the default mailer, with and without pipelining."""
    server = SmtpSink().start()
    server.sink.pipelining = request.param
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": server.port, "timeout": 5},
        }
    }
    yield server.sink
    server.stop()


def recipients(people=PEOPLE):
    return [
        emails.Recipient(
            address,
            personal={"name": name, "link": f"https://example.com/leave/{address}?a=1&b=2"},
            headers={
                "List-Unsubscribe": f"<{django_settings.SITE_URL}/unsubscribe/"
                + "eyJ1IjoxMjM0NTYsImsiOiJwcmljZSJ9:1xX9lH:"
                + "x" * 43
                + "/>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        for address, name in people
    ]


@pytest.mark.parametrize(
    "news, encoding",
    [
        ("Short news.", "7bit"),
        (LONG, "quoted-printable"),
        (CYRILLIC, "base64"),
        (" \n" * 8 + LONG, "quoted-printable"),  # a line end: one character, as it measures
    ],
    ids=["short lines", "long lines", "mostly not latin", "lines that end in a space"],
)
def test_each_email_reads_as_django_would_build_it_for_that_recipient(
    probe_templates, mailbox, news, encoding
):
    context = {"team": "Zoë’s team", "news": news}
    sent = emails.send_batch("probe:1", "probe", context=context, recipients=recipients())
    assert sent == 3
    ada = received(mailbox, "ada@example.com")
    assert ada.get_body(("plain",))["Content-Transfer-Encoding"] == encoding
    by_address = {item["to"][0]: item["bytes"] for item in mailbox.messages}
    for recipient in recipients():
        raw = by_address[recipient.address]
        quick = email.message_from_bytes(raw, policy=email.policy.default)
        subject, text, html = emails.render_email("probe", {**context, **recipient.personal})
        django = EmailMultiAlternatives(
            subject,
            text,
            to=[recipient.address],
            headers={"Message-ID": quick["Message-ID"], **recipient.headers},
        )
        django.attach_alternative(html, "text/html")
        built = django.message(policy=email.policy.SMTP).as_bytes()
        assert readable(quick) == readable(
            email.message_from_bytes(built, policy=email.policy.default)
        )
        sent_at = parsedate_to_datetime(quick["Date"])
        assert abs(sent_at - datetime.now(UTC)) < timedelta(minutes=1)
        # Written as it is, where the email package would have made it encoded-words.
        assert b"\r\nList-Unsubscribe: <http" in raw


def readable(message):
    """What a mail client reads of a message: its headers but the date and the MIME boundary,
    and each part's type, charset, transfer encoding and decoded text."""
    headers = [
        (name, str(value))
        for name, value in message.items()
        if name not in {"Date", "Content-Type"}
    ]
    parts = [
        (
            part.get_content_type(),
            part.get_content_charset(),
            part["Content-Transfer-Encoding"],
            part.get_content(),
        )
        for part in message.iter_parts()
    ]
    return message.get_content_type(), headers, parts


def test_personal_values_are_escaped_in_the_html_part_only(probe_templates, mailbox):
    context = {"team": "A", "news": "N"}
    emails.send_batch("probe:1", "probe", context=context, recipients=recipients())
    zoe = received(mailbox, "zoe@example.com")
    html = zoe.get_body(("html",)).get_content()
    assert "Hello Zoë &lt;b&gt;&amp;&quot;co&quot;," in html
    assert 'href="https://example.com/leave/zoe@example.com?a=1&amp;b=2"' in html
    assert 'Hello Zoë <b>&"co",' in zoe.get_body(("plain",)).get_content()
    nameless = received(mailbox, "nameless@example.com")
    assert nameless["Subject"] == "News for A"
    assert "Hello,\r\n" in nameless.get_body(("plain",)).get_content()


def received(mailbox, address):
    [raw] = [item["bytes"] for item in mailbox.messages if item["to"] == [address]]
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_a_line_that_starts_with_a_dot_arrives_as_it_was(probe_templates, mailbox):
    context = {"team": "A", "news": ".NET prices change.\n.\nThat is all."}
    emails.send_batch("probe:1", "probe", context=context, recipients=recipients(PEOPLE[2:]))
    ada = received(mailbox, "ada@example.com")
    assert "\r\n.NET prices change.\r\n.\r\nThat is all." in ada.get_body(("plain",)).get_content()


def test_a_batch_renders_its_templates_once_and_sends_over_one_connection(
    probe_templates, mailbox, rendered
):
    many = [(f"reader{i}@example.com", f"Reader {i}") for i in range(30)]
    context = {"team": "A", "news": "N"}
    emails.send_batch("probe:1", "probe", context=context, recipients=recipients(many))
    # Once with markers, once for the first reader to check the markers against.
    assert rendered.count("emails/probe-body-html.html") == 2
    assert mailbox.connections == 1
    assert len(mailbox.messages) == 30


@pytest.fixture
def rendered():
    """The names of the templates rendered during the test, in order."""
    names = []

    def record(sender, template, context, **kwargs):
        names.append(template.name)

    template_rendered.connect(record)
    yield names
    template_rendered.disconnect(record)


def test_a_template_that_changes_a_personal_value_is_refused(probe_templates, mailbox):
    with pytest.raises(ValueError, match="changes a personal value"):
        emails.send_batch("shout:1", "shout", context={}, recipients=recipients())
    assert not mailbox.messages
    assert EmailDelivery.objects.get(recipient="zoe@example.com").status == "failed"


def test_a_recipient_refused_for_good_fails_alone_and_the_others_go(probe_templates, mailbox):
    mailbox.refuse = {"nameless@example.com"}
    context = {"team": "A", "news": "N"}
    assert emails.send_batch("probe:1", "probe", context=context, recipients=recipients()) == 2
    assert sorted(mailbox.recipients()) == ["ada@example.com", "zoe@example.com"]
    refused = EmailDelivery.objects.get(recipient="nameless@example.com")
    assert refused.status == "failed" and "550" in refused.last_error
    # Run again, it asks about the refused one alone, and sends nothing twice.
    assert emails.send_batch("probe:1", "probe", context=context, recipients=recipients()) == 0
    assert len(mailbox.messages) == 2
    assert mailbox.connections == 2


def test_an_address_that_is_not_plain_ascii_goes_the_way_django_sends_it(probe_templates, mailbox):
    people = [("zoe@exämple.com", "Zoë"), ("ada@example.com", "Ada")]
    context = {"team": "A", "news": "N"}
    assert (
        emails.send_batch("probe:1", "probe", context=context, recipients=recipients(people)) == 2
    )
    assert mailbox.recipients() == ["zoe@xn--exmple-cua.com", "ada@example.com"]
    assert set(EmailDelivery.objects.values_list("status", flat=True)) == {"sent"}
    assert mailbox.messages[0]["message"]["To"] == "zoe@xn--exmple-cua.com"
    assert mailbox.connections == 1


def test_the_development_console_prints_each_email(probe_templates, settings, capsys):
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
    context = {"team": "A", "news": "N"}
    emails.send_batch("probe:1", "probe", context=context, recipients=recipients(PEOPLE[2:]))
    printed = capsys.readouterr().out
    assert "Subject: News for A, Ada\n" in printed
    assert "To: ada@example.com\n" in printed
    assert f"List-Unsubscribe: <{settings.SITE_URL}/unsubscribe/" in printed
    assert "Hello Ada," in printed


def test_a_message_the_server_rejects_stops_the_batch_and_the_rest_goes_on_the_retry(
    probe_templates, mailbox
):
    mailbox.reject = {"nameless@example.com"}
    context = {"team": "A", "news": "N"}
    with pytest.raises(SMTPDataError):
        emails.send_batch("probe:1", "probe", context=context, recipients=recipients())
    assert statuses() == {"zoe@example.com": "sent", "nameless@example.com": "failed",
                          "ada@example.com": "pending"}  # fmt: skip
    mailbox.reject = set()
    assert emails.send_batch("probe:1", "probe", context=context, recipients=recipients()) == 2
    assert sorted(mailbox.recipients()) == ["ada@example.com", "nameless@example.com",
                                            "zoe@example.com"]  # fmt: skip


def statuses():
    return dict(EmailDelivery.objects.values_list("recipient", "status"))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_marks_commit_without_waiting_for_the_disk_and_the_session_stays(
    probe_templates, mailbox
):
    context = {"team": "A", "news": "N"}
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        [(before,)] = cursor.fetchall()
        assert emails.send_batch("probe:1", "probe", context=context, recipients=recipients()) == 3
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchall() == [(before,)]
    assert set(statuses().values()) == {"sent"}


@pytest.mark.postgres
def test_inside_a_transaction_the_marks_commit_with_it_as_it_commits(probe_templates, mailbox):
    context = {"team": "A", "news": "N"}
    assert emails.send_batch("probe:1", "probe", context=context, recipients=recipients()) == 3
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchall() == [("on",)]


@pytest.mark.postgres
def test_the_mark_is_prepared_once_and_nothing_else_is(probe_templates, mailbox):
    context = {"team": "A", "news": "N"}
    for batch in ("probe:1", "probe:2"):
        emails.send_batch(batch, "probe", context=context, recipients=recipients())
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        [(statement,)] = cursor.fetchall()
    assert statement.startswith("UPDATE accounts_emaildelivery SET status = 'sent'")
    assert connection.connection.prepare_threshold is None  # Django's, as it was


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_mark_whose_prepared_statement_is_gone_goes_unprepared(probe_templates, mailbox):
    """As behind a pooler that does not follow prepared statements: the next mark lands on a
    server connection that never had it."""
    context = {"team": "A", "news": "N"}
    emails.send_batch("probe:1", "probe", context=context, recipients=recipients(PEOPLE[:1]))
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")  # behind psycopg's back
    assert emails.send_batch("probe:2", "probe", context=context, recipients=recipients()) == 3
    assert set(statuses().values()) == {"sent"}
