"""Emailing an announcement to the users subscribed to its kind.

A task fans the email out in batches of recipients, each batch a task of its own: a hundred
thousand subscribers are a few hundred tasks, none of them in the publishing transaction.
Every recipient has a delivery row, so a batch that runs again, or resumes after its worker
died, sends to nobody twice.
"""

import re
from html.parser import HTMLParser

from django.db.models import Count, F

from accounts import emails
from accounts.models import EmailDelivery, NotificationSettings
from billing.models import ModelPrice
from console.announcements.models import Announcement
from console.lib import unsubscribe

BATCH_SIZE = 500
EMAIL_KINDS = {Announcement.Kind.PRICE: "price", Announcement.Kind.MAINTENANCE: "maintenance"}


def recipients(announcement, after=0, limit=BATCH_SIZE):
    """The next ids of users subscribed to this announcement's kind, in id order."""
    kind = EMAIL_KINDS[announcement.kind]
    field = unsubscribe.KINDS[kind][0]
    return list(
        NotificationSettings.objects.filter(
            **{field: True}, user__is_active=True, user_id__gt=after
        )
        .order_by("user_id")
        .values_list("user_id", flat=True)[:limit]
    )


def deliver_batch(*, announcement_id, user_ids, claimer=""):
    """Emails one batch of subscribers. Repeat-safe; returns (sent, skipped)."""
    announcement = Announcement.objects.get(pk=announcement_id)
    kind = EMAIL_KINDS[announcement.kind]
    key = f"announcement:{announcement.pk}"
    changed = _changed_targets(announcement)
    # Each subscriber's settings, with their address and name: one model a row, not two.
    subscribers = (
        NotificationSettings.objects.filter(user_id__in=user_ids, user__is_active=True)
        .annotate(email=F("user__email"), name=F("user__name"))
        .order_by("user_id")
    )
    wanted, skipped = [], 0
    for prefs in subscribers:
        if announcement.kind == Announcement.Kind.PRICE:
            subscribed = prefs.wants_price_email(*changed)
            unsubscribed = not prefs.price_emails
        else:
            subscribed = unsubscribed = getattr(prefs, unsubscribe.KINDS[kind][0])
            unsubscribed = not unsubscribed
        if subscribed:
            wanted.append(prefs)
        else:
            skipped += 1
            if unsubscribed:  # since the fan-out: counted for staff
                emails.skip(key, prefs.email, "announcement", "unsubscribed")
    context = {
        "announcement": announcement,
        "subject_prefix": _subject_prefix(announcement),
        "body_text": plain_text(announcement.body_html),
        "kind_label": unsubscribe.KINDS[kind][1],
    }
    links = unsubscribe.unsubscribe_urls(wanted, kind)  # by user id: their settings' pk
    recipients = [
        emails.Recipient(
            prefs.email,
            personal={"name": prefs.name, "unsubscribe_url": links[prefs.pk]},
            headers=unsubscribe.headers(prefs, kind, links[prefs.pk]),
        )
        for prefs in wanted
    ]
    sent = emails.send_batch(
        key, "announcement", context=context, recipients=recipients, claimer=claimer
    )
    return sent, skipped


SUBJECT_PREFIXES = {
    Announcement.Kind.PRICE: "Price change",
    Announcement.Kind.MAINTENANCE: "Maintenance",
}


def _subject_prefix(announcement):
    """What the subject says before the title: the kind, unless the title says it already
    ("Price change: gpt-4o-mini" is not made "Price change: Price change: gpt-4o-mini")."""
    prefix = SUBJECT_PREFIXES.get(announcement.kind, "News")
    return "" if announcement.title.casefold().startswith(prefix.casefold()) else prefix


def plain_text(html, width=72):
    """The plain-text part of an email from the sanitised HTML of its Markdown: paragraphs,
    lists with dashes, links with their address, no Markdown marks. A table is written as
    aligned columns when they fit in `width`, else as one block per row: the first cell, then
    "Column: value" for each other cell."""
    parser = _PlainText(width)
    parser.feed(html)
    parser.close()
    return "\n".join(line.rstrip() for line in "".join(parser.out).strip().split("\n"))


class _PlainText(HTMLParser):
    BLOCKS = {"p", "h2", "h3", "h4", "ul", "ol", "pre", "blockquote", "table", "hr"}

    def __init__(self, width):
        super().__init__(convert_charrefs=True)
        self.width = width
        self.out = []  # what is written so far
        self.lists = []  # the open lists: None for a bulleted one, the next number otherwise
        self.href = self.link = None  # within a link: its address, its text so far
        self.rows = self.row = self.cell = None  # within a table: rows, cells, a cell's text
        self.pre = False

    @property
    def target(self):
        """Where text goes now: the open cell, the open link, or the output."""
        if self.cell is not None:
            return self.cell
        return self.link if self.link is not None else self.out

    def block(self):
        """Starts a block on a line of its own, a blank line after the previous one."""
        written = "".join(self.out).rstrip(" \n")
        self.out = [written + "\n\n" if written else ""]

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCKS and not self.lists:
            self.block()
        if tag == "pre":
            self.pre = True
        elif tag == "br":
            self.target.append("\n")
        elif tag == "hr":
            self.out.append("----")
        elif tag in {"ul", "ol"}:
            self.lists.append(1 if tag == "ol" else None)
        elif tag == "li" and self.lists:
            number = self.lists[-1]
            if number is not None:
                self.lists[-1] += 1
            written = "".join(self.out).rstrip(" ")
            self.out = [written + ("\n" if written and not written.endswith("\n") else "")]
            self.out.append("  " * (len(self.lists) - 1) + (f"{number}. " if number else "- "))
        elif tag == "a":
            self.href, self.link = dict(attrs).get("href") or "", []
        elif tag == "table":
            self.rows = []
        elif tag == "tr" and self.rows is not None:
            self.row = []
        elif tag in {"td", "th"} and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "pre":
            self.pre = False
        elif tag in {"ul", "ol"} and self.lists:
            self.lists.pop()
        elif tag == "a" and self.link is not None:
            text, href = "".join(self.link).strip(), self.href
            self.href = self.link = None
            shown = href in {"", text, f"mailto:{text}"}
            self.target.append(text if shown else f"{text} ({href})")
        elif tag in {"td", "th"} and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
        elif tag == "table" and self.rows is not None:
            self.out.append(_table(self.rows, self.width))
            self.rows = None
        if tag in self.BLOCKS and not self.lists:
            self.block()

    def handle_data(self, data):
        if self.pre:
            self.out.append(data)
        elif self.rows is None or self.cell is not None:  # not the breaks between table tags
            text = re.sub(r"\s+", " ", data)
            if text.startswith(" ") and "".join(self.target)[-1:] in {"", " ", "\n"}:
                text = text[1:]
            self.target.append(text)


def _table(rows, width):
    """A table as plain text: aligned columns if they fit in `width`, else a block per row."""
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    rows = [row + [""] * (columns - len(row)) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(columns)]
    if sum(widths) + 2 * (columns - 1) <= width:
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)
    header, *body = rows
    blocks = []
    for row in body:
        lines = [row[0]]
        lines += [
            f"  {name}: {cell}" for name, cell in zip(header[1:], row[1:], strict=True) if cell
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _changed_targets(announcement):
    """(vendors, models) a price announcement is about, for subscribers who chose some."""
    adjustments = announcement.price_adjustments.select_related("model_price", "line")
    vendors, models = set(), set()
    for adjustment in adjustments:
        if adjustment.model_price:
            vendors.add(adjustment.model_price.vendor)
            models.add(adjustment.model_price.model)
        else:  # a line's multiplier moves every model on it
            vendors.update(ModelPrice.objects.values_list("vendor", flat=True))
            models.update(ModelPrice.objects.values_list("model", flat=True))
    return vendors, models


def delivery_counts(announcement):
    """{status: how many} of the emails of an announcement, for staff."""
    rows = (
        EmailDelivery.objects.filter(key=f"announcement:{announcement.pk}")
        .values("status")
        .annotate(n=Count("id"))
    )
    return {row["status"]: row["n"] for row in rows}
