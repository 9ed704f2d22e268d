import uuid

from allauth.account.adapter import DefaultAccountAdapter

from console.lib.background import enqueue_on_commit


class AccountAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix, email, context):
        """Account emails (verification, password reset) leave through Celery like all others:
        rendered here, queued on commit, recorded per recipient."""
        from console.tasks import send_account_email

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
