from datetime import UTC, datetime

from celery import shared_task

from accounts.emails import send_once
from tokens.models import Token


@shared_task(autoretry_for=(Exception,), retry_backoff=30, retry_backoff_max=3600, max_retries=10)
def send_token_notice(token_id, event, stamp):
    """Security notice: a token was created or its key rotated. Once per event."""
    from accounts.models import NotificationSettings

    token = Token.objects.select_related("user").filter(pk=token_id).first()
    if token is None or not NotificationSettings.of(token.user).security_emails:
        return False
    return send_once(
        f"token-{event}:{token_id}:{stamp}",
        "token-notice",
        to=token.user.email,
        context={
            "token": token,
            "event": event,
            "at": datetime.fromtimestamp(stamp / 1000, tz=UTC),
            "user": token.user,
        },
    )
