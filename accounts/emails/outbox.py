"""The mail server's side of a batch: one connection, and the emails' bytes sent on it."""

import re
from smtplib import SMTPDataError, SMTPRecipientsRefused, SMTPSenderRefused

from django.conf import settings
from django.core.mail import mailers
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

from accounts.emails.drafts import PreparedEmail


class Outbox:
    """The default mailer, open for a batch. Over Django's SMTP backend, emails go out on its
    connection as the bytes built for them; through any other backend, as EmailMessages."""

    def __init__(self):
        self.mailer = mailers.default
        self.opened = False
        self.riding = False  # an envelope on the wire, its message not sent yet

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        if self.riding:  # the batch stopped before that message: leave the server, no QUIT
            self.mailer.connection.close()
        if self.opened:
            self.mailer.close()

    def send_all(self, letters):
        """Sends (pk, letter) pairs in order, yielding (pk, letter, None) once the server took
        a letter, (pk, letter, error) once it refused or failed; the next letter goes when
        the caller comes back, having recorded the last."""
        if not letters:
            return
        smtp = None
        try:
            self.opened = True
            self.mailer.open()
            if isinstance(self.mailer, SmtpBackend):
                smtp = self.mailer.connection
                smtp.ehlo_or_helo_if_needed()
                sender = self.mailer.prep_address(settings.DEFAULT_FROM_EMAIL)
        except Exception as error:
            yield *letters[0], error
            return
        if smtp is not None and smtp.has_extn("pipelining"):
            yield from self._pipelined(smtp, sender, letters)
            return
        for pk, letter in letters:
            try:
                if smtp is None or letter.data is None:
                    self.mailer.send_messages([PreparedEmail(letter)])
                else:
                    smtp.sendmail(sender, [letter.to], letter.data)
            except Exception as error:
                yield pk, letter, error
            else:
                yield pk, letter, None

    def _pipelined(self, smtp, sender, letters):
        """The letters sent in one round trip each (RFC 2920): the envelope of the next one
        (MAIL, RCPT, DATA) written with this one's message, their replies read after. A
        letter that Django builds goes alone, one command at a time."""
        for (pk, letter), (_pk, upcoming) in zip(
            letters, [*letters[1:], (None, None)], strict=True
        ):
            try:
                if letter.data is None:
                    self.mailer.send_messages([PreparedEmail(letter)])
                else:
                    next_envelope = b""
                    if upcoming is not None and upcoming.data is not None:
                        next_envelope = envelope(sender, upcoming.to)
                    if not self.riding:
                        smtp.send(envelope(sender, letter.to))
                    self.riding = False
                    refused = refusal(smtp, sender, letter.to)
                    if refused is None:
                        smtp.send(stuffed(letter.data) + b".\r\n" + next_envelope)
                        self.riding = bool(next_envelope)
                        code, reply = smtp.getreply()
                        if code != 250:
                            raise SMTPDataError(code, reply)
                    elif smtp.sock is not None:  # forget it, so that the next one may go
                        smtp.send(b"RSET\r\n" + next_envelope)
                        self.riding = bool(next_envelope)
                        smtp.getreply()
                    if refused is not None:
                        raise refused
            except Exception as error:
                yield pk, letter, error
            else:
                yield pk, letter, None


def stuffed(data):
    """The message with a dot added to each line that starts with one, as SMTP asks."""
    return _DOT.sub(b"..", data) if _DOTTED.search(data) else data


def envelope(sender, recipient):
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()


def refusal(smtp, sender, recipient):
    """Reads the replies to an envelope: None if the server waits for the message, else the
    error smtplib's sendmail would raise. A server that waits for a message to nobody is
    left, since nothing else can follow."""
    mail, rcpt, start = smtp.getreply(), smtp.getreply(), smtp.getreply()
    if start[0] == 354 and mail[0] == 250 and rcpt[0] in (250, 251):
        return None
    if start[0] == 354:
        smtp.close()
    if mail[0] != 250:
        return SMTPSenderRefused(*mail, sender)
    if rcpt[0] not in (250, 251):
        return SMTPRecipientsRefused({recipient: rcpt})
    return SMTPDataError(*start)


_DOT = re.compile(rb"^\.", re.MULTILINE)  # a line that starts with a dot gets another
_DOTTED = re.compile(rb"\n\.")  # found quicker than by `in` (a message never starts with one)
