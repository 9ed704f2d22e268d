import uuid
from urllib.parse import urlsplit, urlunsplit

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings

from accounts.tasks import send_account_email
from console.lib.background import enqueue_on_commit


class ProductSite:
    """What allauth's templates call `current_site`: the product's name and address.
    (Without django.contrib.sites allauth would take the request's Host header, or nothing
    at all outside a request.)"""

    def __init__(self):
        self.name = settings.SITE_NAME
        self.domain = urlsplit(settings.SITE_URL).netloc


class AccountAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix, email, context):
        """Account emails (verification, password reset) leave through Celery like all others:
        rendered here with our templates (templates/account/email/, templates/mfa/email/:
        a plain part and an HTML part each), queued on commit, recorded per recipient."""
        # allauth builds its links (verification, password reset, sign-up) from the request's
        # Host header; ours point at SITE_URL whatever that header said.
        context = {
            "email": email,
            "site_name": settings.SITE_NAME,
            "site_url": settings.SITE_URL,
            "current_site": ProductSite(),
            **{
                name: on_site(value) if name.endswith("_url") and isinstance(value, str) else value
                for name, value in context.items()
            },
        }
        message = self.render_mail(template_prefix, email, context)
        html = next(
            (
                content
                for content, kind in getattr(message, "alternatives", [])
                if kind == "text/html"
            ),
            "",
        )
        text = message.body if message.content_subtype != "html" else ""
        enqueue_on_commit(
            send_account_email,
            f"account:{uuid.uuid4()}",
            email,
            message.subject,
            text,
            html or text,
        )

    def send_notification_mail(self, template_prefix, user, context=None, email=None):
        """A notice of a change to the account, addressed to its owner by name."""
        super().send_notification_mail(
            template_prefix, user, {"user": user, **(context or {})}, email
        )


def on_site(url):
    """`url`'s path, query and fragment on SITE_URL."""
    parts = urlsplit(url)
    site = urlsplit(settings.SITE_URL)
    return urlunsplit((site.scheme, site.netloc, parts.path, parts.query, parts.fragment))
