"""Upstream channel keys are encrypted at rest (Fernet: AES-128-CBC with HMAC-SHA256).

The encryption key derives from CHANNEL_KEY_SECRET, or from SECRET_KEY when that is unset.
Keys encrypted under a previous secret (CHANNEL_KEY_SECRET_FALLBACKS, or SECRET_KEY_FALLBACKS
while the key is derived from SECRET_KEY) stay readable; `reencrypt` moves one to the current.
"""

import base64
import functools
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _fernet_for(secret: str) -> Fernet:
    return Fernet(
        base64.urlsafe_b64encode(hashlib.sha256(f"channel-keys:{secret}".encode()).digest())
    )


def _secrets() -> list[str]:
    """The current secret first, then the ones it replaced."""
    if settings.CHANNEL_KEY_SECRET:
        current = [settings.CHANNEL_KEY_SECRET]
        derived = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    else:
        current = [settings.SECRET_KEY]
        derived = list(settings.SECRET_KEY_FALLBACKS)
    # A secret set for the first time still reads what the derived one encrypted.
    ordered = [*current, *settings.CHANNEL_KEY_SECRET_FALLBACKS, *derived]
    return list(dict.fromkeys(secret for secret in ordered if secret))


def _fernet() -> MultiFernet:
    return _multi_fernet(tuple(_secrets()))


@functools.lru_cache(maxsize=4)
def _multi_fernet(secrets: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet_for(secret) for secret in secrets])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(ciphertext: str) -> str:
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "A channel key cannot be decrypted: CHANNEL_KEY_SECRET (or SECRET_KEY) changed. Put "
            "the previous value in CHANNEL_KEY_SECRET_FALLBACKS (or SECRET_KEY_FALLBACKS)."
        ) from None


def reencrypt(ciphertext: str) -> str:
    """The same key encrypted under the current secret (ValueError if no secret reads it)."""
    if not ciphertext:
        return ""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError("No configured secret decrypts this channel key.") from None
