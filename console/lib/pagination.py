"""Keyset pagination: pages found by the last row seen, never by OFFSET or a full COUNT."""

from dataclasses import dataclass

from console.lib.params import id_param


@dataclass
class KeysetPage:
    items: list
    next_cursor: str | None
    first: bool

    @property
    def has_next(self):
        return self.next_cursor is not None


def keyset_page(queryset, cursor, *, size=50):
    """Newest first by primary key. `cursor` is the last id of the previous page, or None."""
    queryset = queryset.order_by("-pk")
    after = id_param(cursor)
    if after is not None:
        queryset = queryset.filter(pk__lt=after)
    items = list(queryset[: size + 1])
    more = len(items) > size
    items = items[:size]
    return KeysetPage(
        items=items, next_cursor=str(items[-1].pk) if more else None, first=not cursor
    )
