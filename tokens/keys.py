"""API keys: `sk-` + 43 random base62 characters + a 6-character checksum.

The random part carries about 256 bits from the OS's CSPRNG. The checksum (CRC-32 of the random
part, in base62) lets a secret scanner, or the gateway, tell a real key from a typo without a
lookup. Keys are stored only as a keyed hash (HMAC-SHA256): they are random, so a fast hash is
right, and the key of the hash keeps a stolen table of hashes useless on its own.
"""

import functools
import hashlib
import hmac
import secrets
import string
import zlib

from django.conf import settings
from django.utils.crypto import salted_hmac

PREFIX = "sk-"
ALPHABET = string.digits + string.ascii_letters
RANDOM_LENGTH = 43
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH


def _base62(number, width):
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(random_part):
    return _base62(zlib.crc32(random_part.encode()), CHECKSUM_LENGTH)


def generate_key():
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return PREFIX + random_part + _checksum(random_part)


def looks_valid(key):
    """True when `key` has our shape and its checksum matches. No database involved."""
    if not isinstance(key, str) or len(key) != KEY_LENGTH or not key.startswith(PREFIX):
        return False
    body = key[len(PREFIX) :]
    if any(char not in ALPHABET for char in body):
        return False
    return hmac.compare_digest(body[RANDOM_LENGTH:], _checksum(body[:RANDOM_LENGTH]))


def _hash_secret():
    return _derive_secret(settings.TOKEN_HASH_KEY, settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _derive_secret(token_hash_key, secret_key):
    # Computed once per key pair: hashing an API key is on the gateway's hot path.
    if token_hash_key:
        return token_hash_key.encode()
    return (
        salted_hmac("tokens.keys", "hash", secret=secret_key, algorithm="sha256")
        .hexdigest()
        .encode()
    )


def hash_key(key):
    return hmac.new(_hash_secret(), key.encode(), hashlib.sha256).hexdigest()


def mask(key):
    """What is shown after creation: the first and last four characters of the key."""
    return f"{key[: len(PREFIX) + 4]}…{key[-4:]}"
