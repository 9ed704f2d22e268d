"""Token workflows. Each change reaches the gateway's caches once its transaction commits."""

from django.db import transaction
from django.utils import timezone

from console.lib.background import enqueue_on_commit
from tokens import keys
from tokens.cache import publish_invalidation
from tokens.models import Token


def _invalidate_on_commit(token, *key_hashes):
    hashes = [h for h in key_hashes if h]
    user = [token.user_id]  # its quota lease, too, must be looked at again
    transaction.on_commit(lambda: publish_invalidation(key_hashes=hashes, user_ids=user))


def _notify_on_commit(token, event):
    from tokens.tasks import send_token_notice

    stamp = int(timezone.now().timestamp() * 1000)
    enqueue_on_commit(send_token_notice, token.pk, event, stamp)


def token_create(
    *,
    user,
    name,
    line,
    unlimited_quota=True,
    quota_limit=None,
    expires_at=None,
    allowed_models=(),
    ip_allowlist=(),
    notify=True,
):
    """Creates a token and returns (token, key). The key exists only in the return value."""
    key = keys.generate_key()
    with transaction.atomic():
        token = Token(
            user=user,
            name=name,
            line=line,
            unlimited_quota=unlimited_quota,
            quota_limit=None if unlimited_quota else quota_limit,
            expires_at=expires_at,
            allowed_models=list(allowed_models),
            ip_allowlist=list(ip_allowlist),
        )
        token.set_key(key)
        token.save()
        _invalidate_on_commit(token, token.key_hash)  # forget a cached "unknown key" for it
        if notify:
            _notify_on_commit(token, "created")
    return token, key


# What the owner's edit form changes. Only these are written: the gateway, rotation and
# deletion change other columns of the same row meanwhile.
EDITABLE = (
    "name",
    "unlimited_quota",
    "quota_limit",
    "line",
    "allowed_models",
    "ip_allowlist",
    "expires_at",
)


def token_update(*, token, fields=EDITABLE):
    """Saves the edits made to `fields` of `token` (from the edit form or the admin)."""
    with transaction.atomic():
        if token.unlimited_quota:
            token.quota_limit = None
        token.save(update_fields=[*fields, "quota_limit", "updated_at"])
        _invalidate_on_commit(token, token.key_hash)
    return token


def token_set_enabled(*, token, enabled):
    with transaction.atomic():
        Token.objects.filter(pk=token.pk).update(enabled=enabled, updated_at=timezone.now())
        token.enabled = enabled
        _invalidate_on_commit(token, token.key_hash)
    return token


def token_rotate(*, token, notify=True):
    """Gives the token a new key; the old key stops working at once. Returns the new key."""
    key = keys.generate_key()
    with transaction.atomic():
        old_hash = token.key_hash
        token.set_key(key)
        token.rotated_at = timezone.now()
        token.save(
            update_fields=["key_hash", "key_prefix", "key_suffix", "rotated_at", "updated_at"]
        )
        _invalidate_on_commit(token, old_hash, token.key_hash)
        if notify:
            _notify_on_commit(token, "rotated")
    return key


def token_delete(*, token):
    """Deletes a token for the user. Its row stays, disabled, so that old logs still name it."""
    with transaction.atomic():
        Token.objects.filter(pk=token.pk).update(
            enabled=False, deleted_at=timezone.now(), updated_at=timezone.now()
        )
        _invalidate_on_commit(token, token.key_hash)


def grants_changed(*, user_ids):
    """A line grant was given or withdrawn: the users' tokens must be looked at again."""
    transaction.on_commit(lambda: publish_invalidation(user_ids=list(user_ids)))
