"""Emails rendered once for a batch and built for each recipient as MIME bytes.

A batch's templates are rendered once with a marker where each recipient's own values go;
each recipient's email is that draft with the markers filled in, and its MIME bytes are laid
out as the email package lays them out (the same headers, parts and encodings), from parts
encoded once where they are everyone's.
"""

import base64
import binascii
import email
import email.policy
import html
import re
import secrets
from datetime import UTC, datetime
from email import quoprimime
from email.utils import format_datetime
from typing import NamedTuple

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.utils import timezone


class Letter(NamedTuple):
    """One recipient's email: what an EmailMessage needs, and its MIME bytes when they could
    be built the quick way (None: Django builds them, for an address that is not plain)."""

    to: str
    subject: str
    text: str
    html: str
    headers: dict
    data: bytes | None


class PreparedEmail(EmailMultiAlternatives):
    """An email whose MIME bytes were built ahead; message() reads them back, so that any
    mail backend (the console, the test outbox) has exactly what the SMTP server would get."""

    def __init__(self, letter):
        super().__init__(
            letter.subject,
            letter.text,
            settings.DEFAULT_FROM_EMAIL,
            [letter.to],
            headers=letter.headers,
            alternatives=[(letter.html, "text/html")],
        )
        self.data = letter.data

    def message(self, *, policy=email.policy.default):
        if self.data is None:
            return super().message(policy=policy)
        # As built: long headers are not folded again, nor encoded, on the way out.
        return email.message_from_bytes(self.data, policy=policy.clone(refold_source="none"))


class Draft(NamedTuple):
    """An email rendered with markers: each part a list of text and (value index, escaped)
    pairs; the Subject header when it is everyone's, encoded once; the MIME parts."""

    subject: list
    text: list
    html: list
    subject_header: bytes | None
    text_part: "Body"
    html_part: "Body"


_SMTP = email.policy.SMTP
# What the email package would write as it is: ASCII, no line break, no encoded-word.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_PLAIN_VALUE = re.compile(r"(?!.*=\?)[ -~]{0,900}")
# A recipient's own header, written as it is: not one of those the layout writes itself.
_OWN_HEADER = re.compile(
    r"(?!(from|to|cc|bcc|reply-to|subject|date|mime-version|content-[a-z-]+)$)[!-9;-~]+",
    re.IGNORECASE,
)


class Drafts:
    """The email of a batch, rendered once per pattern of which personal values are empty
    (a name or none: "Hello Ada," or "Hello,"), with markers in place of the values.

    A marker is a random token, a number and "&": where the template escaped it for HTML it
    reads "&amp;", so it is filled in escaped there and as it is elsewhere, exactly as the
    template would have printed the value."""

    def __init__(self, template, render, context):
        self.template = template
        self.render = render
        self.context = context
        self.token = secrets.token_hex(8)
        self.markers = re.compile(rf"{self.token}(\d+)&(amp;)?")
        self.drafts = {}
        self.boundary = f"==============={secrets.randbelow(10**19):019d}==".encode()
        sender = settings.DEFAULT_FROM_EMAIL
        self.from_header = _fold("From", sender) if _PLAIN_VALUE.fullmatch(sender) else None
        self.zone = timezone.get_current_timezone() if settings.EMAIL_USE_LOCALTIME else UTC
        self.dated = None, ""

    def _date(self):
        """The Date header's value: the time of sending, to the second."""
        now = datetime.now(self.zone).replace(microsecond=0)
        if now != self.dated[0]:
            self.dated = now, format_datetime(now)
        return self.dated[1]

    def letter(self, recipient, message_id):
        personal = sorted((name, str(v or "")) for name, v in (recipient.personal or {}).items())
        values = [(value, _escape(value)) for _name, value in personal]
        shape = tuple((name, bool(value)) for name, value in personal)
        draft = self.drafts.get(shape) or self._draft(shape, personal, values)
        subject, text, html = _parts(draft, values)
        headers = {"Message-ID": message_id, **(recipient.headers or {})}
        data = None
        if (
            self.from_header
            and _PLAIN_ADDRESS.fullmatch(recipient.address)
            and all(
                _OWN_HEADER.fullmatch(name) and _PLAIN_VALUE.fullmatch(value)
                for name, value in headers.items()
            )
        ):
            data = self._mime(draft, subject, recipient.address, headers, text, values)
        return Letter(recipient.address, subject, text, html, headers, data)

    def _draft(self, shape, personal, values):
        """The draft of one shape, checked against the templates rendered for the recipient at
        hand: a template that changes a personal value (a filter) fails here, loudly, rather
        than send everyone a wrong email."""
        context = dict(self.context)
        for index, (name, present) in enumerate(shape):
            context[name] = f"{self.token}{index}&" if present else ""
        parts = []
        for part in self.render(context):
            pieces = self.markers.split(part)  # text, index, escaped, text, …
            draft = [pieces[0]]
            for i in range(1, len(pieces), 3):
                draft += [(int(pieces[i]), bool(pieces[i + 1])), pieces[i + 2]]
            parts.append(draft)
        subject, text, html = parts
        everyones = _fold("Subject", subject[0]) if len(subject) == 1 else None
        draft = Draft(subject, text, html, everyones, Body("plain", text), Body("html", html))
        if _parts(draft, values) != tuple(self.render({**self.context, **dict(personal)})):
            raise ValueError(
                f"The {self.template} email changes a personal value ({', '.join(dict(shape))}) "
                "as it prints it; print it as it is."
            )
        self.drafts[shape] = draft
        return draft

    def _mime(self, draft, subject, to, headers, text, values):
        """The email as bytes, laid out as the email package lays it out."""
        own = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        values = [(value.encode(), escaped.encode()) for value, escaped in values]
        delimiter = b"\r\n--" + self.boundary
        return b"".join(
            [
                b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="',
                self.boundary,
                b'"\r\n',
                draft.subject_header or _fold("Subject", subject),
                self.from_header,
                f"To: {to}\r\nDate: {self._date()}\r\n".encode(),
                own.encode(),
                *([delimiter, b"\r\n", draft.text_part.encode(values)] if text else []),
                delimiter,
                b"\r\n",
                draft.html_part.encode(values),
                delimiter,
                b"--\r\n",
            ]
        )


def _parts(draft, values):
    """(subject, text, html) of a draft with the values of one recipient."""
    subject = _fill(draft.subject, values)
    if draft.subject_header is None:  # someone's own: spaced as render_email spaces it
        subject = " ".join(subject.split())
    return subject, _fill(draft.text, values), _fill(draft.html, values)


def _fill(draft, values):
    """A part with each marker replaced by its value, escaped or as it is."""
    if len(draft) == 1:
        return draft[0]
    return "".join(piece if type(piece) is str else values[piece[0]][piece[1]] for piece in draft)


def _fold(name, value):
    """A header line as the email package writes it: encoded, folded."""
    return _SMTP.header_factory(name, value).fold(policy=_SMTP).encode("ascii")


def _escape(value):
    """A value as the templates print it in HTML: escaped, unless it is marked safe."""
    return value.__html__() if hasattr(value, "__html__") else html.escape(value)


_LINE_END = re.compile(rb"(\r\n|\r|\n)")


class Body:
    """A text part of a draft, cut into runs of lines: runs that are everyone's, encoded once,
    and runs with a personal value in them, encoded for each recipient. Quoted-printable
    encodes line by line, so runs encoded apart join into the encoding of the whole. The
    encoding is the email package's choice: as it is when every line is short, else
    quoted-printable, or base64 when that is shorter (mostly non-Latin text)."""

    def __init__(self, subtype, draft):
        self.header = (
            f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: '
        ).encode()
        self.runs = []  # bytes: lines that are everyone's; list: lines with a personal value
        line = []
        for piece in draft:
            if type(piece) is not str:
                line.append(piece)
                continue
            chunks = _LINE_END.split(piece.encode())  # text, line end, text, …, text
            for i in range(0, len(chunks) - 1, 2):
                self._add_line([*line, chunks[i]])
                line = []
            line.append(chunks[-1])
        if any(line):  # the last line, without a line end
            self._add_line(line)
        static = [run for run in self.runs if type(run) is bytes]
        self.longest = max((len(line) for run in static for line in run.splitlines()), default=0)
        self.ascii = all(run.isascii() for run in static)
        self.quoted = [
            binascii.b2a_qp(run, istext=True) if type(run) is bytes else None for run in self.runs
        ]

    def _add_line(self, line):
        if all(type(piece) is bytes for piece in line):
            if self.runs and type(self.runs[-1]) is bytes:
                self.runs[-1] += b"".join(line) + b"\r\n"
            else:
                self.runs.append(b"".join(line) + b"\r\n")
        elif self.runs and type(self.runs[-1]) is list:
            self.runs[-1] += [*line, b"\r\n"]
        else:
            self.runs.append([*line, b"\r\n"])

    def encode(self, values):
        """The part, headers and body, with one recipient's values: (value, escaped) bytes."""
        raw, longest, ascii = [], self.longest, self.ascii
        for run in self.runs:
            if type(run) is not bytes:
                filled = b"".join(p if type(p) is bytes else values[p[0]][p[1]] for p in run)
                lines = filled.splitlines()  # a value may hold a line break
                run = b"\r\n".join(lines) + b"\r\n"
                longest, ascii = max(longest, *map(len, lines)), ascii and run.isascii()
            raw.append(run)
        body = b"".join(raw) or b"\r\n"
        if longest <= _SMTP.max_line_length:
            return self.header + (b"7bit" if ascii else b"8bit") + b"\r\n\r\n" + body
        if _shorter_in_base64(body):
            return (
                self.header + b"base64\r\n\r\n" + base64.encodebytes(body).replace(b"\n", b"\r\n")
            )
        quoted = (
            done if done is not None else binascii.b2a_qp(run, istext=True)
            for done, run in zip(self.quoted, raw, strict=True)
        )
        return self.header + b"quoted-printable\r\n\r\n" + b"".join(quoted)


def _shorter_in_base64(body):
    """Whether the first ten lines are longer in quoted-printable than in base64, as the email
    package measures them (quoprimime, which ends a line with one character). Mostly bounds
    tell without encoding: quoted-printable writes three characters for a byte that is not
    printable ASCII, or "=", and one for any other; three for at most two more a line (a space
    or tab that ends it, a dot alone on it); and a soft line break per 73 at most."""
    lines = body.split(b"\r\n", 10)
    sniff = body[: len(body) - len(lines[10])] if len(lines) > 10 else body
    in_base64 = (len(sniff) + 2) // 3 * 4 + 1  # what binascii.b2a_base64 writes
    encoded = len(sniff.translate(None, _QUOTED_AS_THEY_ARE))
    at_most = len(sniff) + 2 * (encoded + 2 * len(lines))
    if at_most + 3 * (at_most // 73 + 1) < in_base64:
        return False
    if len(sniff) - len(lines) + 2 * encoded > in_base64:
        return True
    return len(quoprimime.body_encode(sniff.decode("latin-1"), _SMTP.max_line_length)) > in_base64


_QUOTED_AS_THEY_ARE = bytes(set(range(32, 127)) - {ord("=")}) + b"\t\r\n"
