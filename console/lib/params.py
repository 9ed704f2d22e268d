"""Values a view reads straight from its URL (path segments, query parameters) to look rows up.

Anyone can type anything there. A value that no row can hold is answered as "no such row"
without asking the database, which would refuse it with an error (a 500) instead: PostgreSQL
refuses NUL in text, and both databases refuse whole numbers beyond 64 bits.
"""

MAX_ID = 2**63 - 1


def text_param(value, *, max_length=100):
    """`value` stripped, or None when it is missing, holds a NUL or is longer than `max_length`
    (the column it is looked up in)."""
    if value is None:
        return None
    value = value.strip()
    if "\x00" in value or len(value) > max_length:
        return None
    return value


def id_param(value):
    """A row id written in ASCII digits ("42"), or None for anything else ("²", "1e3", "-1",
    a number beyond 64 bits)."""
    if not value or not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    number = int(value)
    return number if number <= MAX_ID else None
