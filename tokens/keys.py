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


def _hash_secrets():
    """The key of the hash first, then the keys it replaced."""
    return _derive_secrets(
        settings.TOKEN_HASH_KEY,
        tuple(settings.TOKEN_HASH_KEY_FALLBACKS),
        settings.SECRET_KEY,
        tuple(settings.SECRET_KEY_FALLBACKS),
    )


@functools.lru_cache(maxsize=4)
def _derive_secrets(token_hash_key, fallbacks, secret_key, secret_key_fallbacks):
    # Computed once per configuration: hashing an API key is on the gateway's hot path.
    derived = [_from_secret_key(key) for key in (secret_key, *secret_key_fallbacks)]
    if token_hash_key:
        # A key set for the first time still accepts the API keys hashed under the derived one.
        ordered = [token_hash_key.encode(), *(key.encode() for key in fallbacks), *derived]
    else:
        ordered = [*derived, *(key.encode() for key in fallbacks)]
    return tuple(dict.fromkeys(ordered))


def _from_secret_key(secret_key):
    return (
        salted_hmac("tokens.keys", "hash", secret=secret_key, algorithm="sha256")
        .hexdigest()
        .encode()
    )


def hash_key(key):
    return hmac.new(_hash_secrets()[0], key.encode(), hashlib.sha256).hexdigest()


def previous_hashes(key):
    """The key's hashes under the keys the current hash key replaced: the fallbacks, and the
    key derived from SECRET_KEY (and its fallbacks) when TOKEN_HASH_KEY is set. Only asked when
    a key is not in the gateway's cache."""
    return [hmac.new(s, key.encode(), hashlib.sha256).hexdigest() for s in _hash_secrets()[1:]]
