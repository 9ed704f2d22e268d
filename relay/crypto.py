"""Upstream channel keys are encrypted at rest (Fernet: AES-128-CBC with HMAC-SHA256)."""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet():
    secret = settings.CHANNEL_KEY_SECRET or settings.SECRET_KEY
    key = base64.urlsafe_b64encode(hashlib.sha256(f"channel-keys:{secret}".encode()).digest())
    return Fernet(key)


def encrypt(plaintext):
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(ciphertext):
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "A channel key cannot be decrypted: CHANNEL_KEY_SECRET (or SECRET_KEY) changed."
        ) from None
