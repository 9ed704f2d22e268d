"""Sending email: three templates per email, one delivery row per recipient.

Every app sends email to users (accounts its security notices, billing its low-balance
alerts, the feature apps theirs), so the mailer lives with the users, in the lowest app.

Emails leave from Celery tasks, queued when the transaction that caused them commits. Each
(message key, recipient) has an EmailDelivery row, claimed with a guarded update before the
email goes out and marked sent right after, so that a task that runs twice does not send
twice. A task killed while sending resumes its own claims when Celery runs it again (the claim
names the task); a claim left by anyone else is taken over only once it is stale. Each email
carries a Message-ID made from its delivery row, the same if it is ever sent again.

Every email goes out through send_batch, a batch of one for most; a price change reaches a
hundred thousand subscribers in batches, each at a few thousand emails a second. A batch
claims its rows in one statement, renders its templates once and builds each email's MIME
bytes from that draft (drafts.py), sends them over one connection (outbox.py) and marks each
one sent, with a prepared statement, before the next one goes.
"""

import hashlib
import json
import sys
import uuid
from datetime import timedelta
from smtplib import SMTPRecipientsRefused
from typing import NamedTuple

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.emails.drafts import Drafts
from accounts.emails.outbox import Outbox
from accounts.models import EmailDelivery
from console.lib import metrics

# How an email task retries while the mail server is down: twelve times, up to an hour apart.
RETRY = {"autoretry_for": (Exception,), "retry_backoff": 30, "retry_backoff_max": 3600,
         "max_retries": 12}  # fmt: skip
# A claim older than this is taken to belong to a worker that died while sending.
STALE_CLAIM = timedelta(minutes=10)
Status = EmailDelivery.Status


class Recipient(NamedTuple):
    """One addressee of a batch: the address, the context values that are theirs alone (text
    such as their name or unsubscribe link) and headers of their own (List-Unsubscribe).
    A template prints a personal value as it is, or tests whether it is empty; it does not
    pass it through a filter, since the templates are rendered before the values are known."""

    address: str
    personal: dict | None = None
    headers: dict | None = None


def render_email(template, context):
    """(subject, text, html) of `templates/emails/<template>-…html`."""
    context = {"site_name": settings.SITE_NAME, "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"emails/{template}-subject.html", context)
    text = render_to_string(f"emails/{template}-body-text.html", context)
    html = render_to_string(f"emails/{template}-body-html.html", context)
    return " ".join(subject.split()), text, html


def send_batch(key, template, *, context, recipients, claimer=""):
    """Sends the email `template` to each recipient who has not had the email named `key`,
    over one connection, and returns how many went out now: every email the site sends is
    counted here. Repeat-safe. Raises what the mail server raised, once that recipient's
    delivery is recorded as failed and the claims not reached are given back for the retry."""
    drafts = Drafts(template, lambda context: render_email(template, context), context)
    return _send(key, drafts, recipients, claimer)


def send_once(key, template, *, to, context, headers=None, claimer=""):
    """Renders and sends the email named `key` to `to` unless it went already. True if sent."""
    return send_batch(
        key, template, context=context, recipients=[Recipient(to, headers=headers)],
        claimer=claimer,
    ) == 1  # fmt: skip


def send_rendered_once(key, *, to, subject, text, html, claimer=""):
    """The same, for an email rendered elsewhere (django-allauth's)."""
    drafts = Drafts("account", lambda _context: (" ".join(subject.split()), text, html), {})
    return _send(key, drafts, [Recipient(to)], claimer) == 1


def skip(key, recipient, template, reason):
    """Records that a recipient was not emailed (unsubscribed since), for staff's counts."""
    EmailDelivery.objects.update_or_create(
        key=key,
        recipient=recipient,
        defaults={"template": template, "status": Status.SKIPPED, "last_error": reason[:500]},
    )


def _send(key, drafts, recipients, claimer):
    claimer = claimer or uuid.uuid4().hex
    claimed = _claim(key, [r.address for r in recipients], drafts.template, claimer=claimer)
    sent, domain, letters = 0, _message_id_domain(), {}
    try:
        for recipient in recipients:
            pk = claimed.get(recipient.address)
            if pk is None or recipient.address in letters:
                continue
            try:
                message_id = _message_id(key, recipient.address, pk, domain)
                letters[recipient.address] = pk, drafts.letter(recipient, message_id)
            except Exception as error:
                _failed(pk, error, drafts.template)
                raise
        with Outbox() as outbox, _SentMarks() as marks:
            for pk, letter, error in outbox.send_all(list(letters.values())):
                del claimed[letter.to]
                if error is None:
                    marks.add(pk)
                    sent += 1
                    continue
                _failed(pk, error, drafts.template)
                if not _refused_for_good(error):
                    raise error
                # the others of the batch still go
    finally:
        # Claimed but not reached (the mail server failed first): free for the retry.
        _release(key, list(claimed), claimer=claimer)
        metrics.emails_sent(drafts.template, sent)
    return sent


def _failed(pk, error, template):
    EmailDelivery.objects.filter(pk=pk).update(status=Status.FAILED, last_error=str(error)[:500])
    metrics.emails_failed(template)


def _refused_for_good(error):
    """Whether the mail server refused a recipient for good (a 5xx answer to RCPT: no such
    mailbox), which a retry would not change, unlike a server that is down or busy."""
    return isinstance(error, SMTPRecipientsRefused) and all(
        code >= 500 for code, _reply in error.recipients.values()
    )


def _claim(key, recipients, template, *, claimer):
    """The delivery rows of (key, each recipient) claimed for sending now, in one statement:
    {recipient: row id}. A missing row is created claimed; a row already sent, skipped, or
    fresh in someone else's hands is left out; a row that an earlier run of the same
    `claimer` left half-done, or a stale claim, is taken (back)."""
    now = timezone.now()
    addresses = json.dumps(list(dict.fromkeys(recipients)))  # a row is claimed once a statement
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM.replace("{addresses}", _ADDRESSES[connection.vendor == "postgresql"]),
            [key, template, now, claimer, now, addresses, now - STALE_CLAIM],
        )
        return dict((recipient, pk) for pk, recipient in cursor.fetchall())


# Inserted claimed, or claimed where it is free to take; the rows returned are those we hold.
# The addresses come as one JSON list, so that the statement is the same for every batch.
_CLAIM = """
    INSERT INTO accounts_emaildelivery AS d (key, recipient, template, status, attempts,
        last_error, claimed_at, claimed_by, created_at)
    SELECT %s, address.value, %s, 'sending', 1, '', %s, %s, %s FROM {addresses} WHERE true
    ON CONFLICT (key, recipient) DO UPDATE
    SET status = 'sending', claimed_at = excluded.claimed_at, claimed_by = excluded.claimed_by,
        attempts = d.attempts + 1
    WHERE d.status IN ('pending', 'failed')
        OR d.status = 'sending' AND (d.claimed_by = excluded.claimed_by OR d.claimed_at < %s)
    RETURNING id, recipient
"""
_ADDRESSES = {
    True: "json_array_elements_text(%s::json) AS address(value)",  # PostgreSQL
    False: "json_each(%s) AS address",  # SQLite
}


def _release(key, recipients, *, claimer):
    """Gives back claims that were not used, so that anyone may send them."""
    if recipients:
        EmailDelivery.objects.filter(
            key=key, recipient__in=recipients, status=Status.SENDING, claimed_by=claimer
        ).update(status=Status.PENDING, claimed_by="")


class _SentMarks:
    """Records each email as sent right after the mail server took it: one statement per
    email, so it is made cheap.

    On PostgreSQL the statement is prepared (parsed and planned once per connection, where
    Django prepares none) and, outside a transaction, each mark is a transaction of its own
    whose commit does not wait for the disk: the database has a mark once it answers, so a
    killed worker loses nothing; a database that crashes may forget its last moment's marks,
    and those emails go again with the same Message-ID, as after any crash between sending
    and marking. The setting is the mark's transaction's alone (set_config's `true`), never
    the session's, which a pooler in transaction mode would hand to other clients. Inside a
    transaction (a caller's, the tests') the marks commit with it, as it commits."""

    def __enter__(self):
        self.atomic = connection.in_atomic_block
        if connection.vendor != "postgresql":
            self.cursor, self.sql = connection.cursor(), _MARK_SENT
            return self
        connection.ensure_connection()
        self.connection = connection.connection
        # A threshold no statement reaches: psycopg prepares only the statements asked to be,
        # where with None, as Django leaves it, it prepares none.
        self.threshold = self.connection.prepare_threshold
        self.connection.prepare_threshold = sys.maxsize
        self.prepared = _PreparedCursor(self.connection)
        wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
        self.cursor = wrap(self.prepared)  # seen by Django as any query
        self.sql = _MARK_SENT if self.atomic else _MARK_SENT_QUICKLY
        return self

    def __exit__(self, *_exc):
        self.cursor.close()
        if connection.vendor == "postgresql":
            self.connection.prepare_threshold = self.threshold

    def add(self, pk):
        try:
            self.cursor.execute(self.sql, [pk])
        except DatabaseError as error:
            # Behind a pooler that shares server connections without following prepared
            # statements (PgBouncer before 1.21, or without max_prepared_statements), the
            # statement is not where it was prepared: the mark goes unprepared, as it would
            # have, since nothing was done.
            if self.atomic or not isinstance(error.__cause__, _STATEMENT_ELSEWHERE):
                raise
            self.prepared.prepare = False
            self.cursor.execute(self.sql, [pk])


class _PreparedCursor(psycopg.Cursor):
    prepare = True

    def execute(self, query, params=None, **kwargs):
        return super().execute(query, params, prepare=self.prepare)


_STATEMENT_ELSEWHERE = (
    psycopg.errors.InvalidSqlStatementName,  # prepared on another server connection
    psycopg.errors.DuplicatePreparedStatement,  # its name taken there by another client
)
_MARK_SENT = (
    "UPDATE accounts_emaildelivery SET status = 'sent', sent_at = CURRENT_TIMESTAMP, "
    "last_error = '' WHERE id = %s"
)
# Set as the row is updated, so for this statement's transaction alone, before it commits.
_MARK_SENT_QUICKLY = _MARK_SENT + " RETURNING set_config('synchronous_commit', 'off', true)"


def _message_id(key, recipient, pk, domain):
    digest = hashlib.sha256(f"{key}|{recipient}".encode()).hexdigest()[:20]
    return f"<{pk}.{digest}@{domain}>"


def _message_id_domain():
    return settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1].strip(">").strip() or "localhost"
