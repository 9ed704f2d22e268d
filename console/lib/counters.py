"""Columns that concurrent code changes with F() updates are never written back by a save().

A form or the admin loads a row, the user edits it for a while, and save() writes every column
back: a counter read at the start (a balance, a token's quota used, a channel's health) and
written at the end undoes whatever the gateway and its settlement did in between. That is the
classic lost update, and with money it corrupts balances. Models list such columns in
`COUNTERS`; a save() of a loaded row leaves them out, and naming one in `update_fields` is an
error. They are changed only by the guarded updates of the code that owns them.
"""


class CountersOutOfSave:
    """Mixin for a Model: `COUNTERS` are written when a row is created, never by a later save."""

    COUNTERS: frozenset[str] = frozenset()

    def save(self, *args, **kwargs):
        if not self._state.adding and not kwargs.get("force_insert"):
            named = kwargs.get("update_fields")
            if named is None:
                kwargs["update_fields"] = [
                    field.name
                    for field in self._meta.concrete_fields
                    if not field.primary_key and field.name not in self.COUNTERS
                ]
            elif written := self.COUNTERS.intersection(named):
                raise ValueError(
                    f"{type(self).__name__}.{', '.join(sorted(written))} changes only through "
                    "guarded updates of the code that owns it, never through save()."
                )
        super().save(*args, **kwargs)
