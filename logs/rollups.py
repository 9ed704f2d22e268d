"""One statement over the usage rollups, for pages that show many figures of one account.

A page's figures (today's totals and busiest minute, the last minute, a week's and a month's
spend, a chart per minute, spend per day and model, the models to filter by) are parts of one
SQL statement: each part a range of a rollup's covering index (user, bucket), all of the same
columns, joined by UNION ALL and told apart by a tag. So a page pays one round trip and one
plan however many figures it shows, and each figure reads the coarsest rollup that covers it:
a month is ~30 day rows per token, model and outcome, not the tens of thousands of minutes of
a busy account.

Buckets are UTC; a range [low, high) counts the buckets that begin in it.
"""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.db import connections, router

from billing.models import ModelPrice
from logs.models import UsageDay, UsageHour, UsageMinute

ONE_HOUR = timedelta(hours=1)
ONE_DAY = timedelta(days=1)


def _sum(expression):
    # PostgreSQL sums bigints as numeric, which arrive as Decimal; cast back, they arrive as int.
    return f"COALESCE(CAST(SUM({expression}) AS BIGINT), 0)"


# What a range of rollup rows adds up to, by name (logs.stats.Totals has the same names).
SUMS = {
    "requests": _sum("requests"),
    "errors": _sum("CASE WHEN ok THEN 0 ELSE requests END"),
    "prompt_tokens": _sum("prompt_tokens"),
    "completion_tokens": _sum("completion_tokens"),
    "cost": _sum("cost"),
    "cache_read_tokens": _sum("cache_read_tokens"),
    "cache_write_tokens": _sum("cache_write_tokens"),
}
COLUMNS = ("tag", "at", "day", "model", *SUMS, "peak")
NO_DAY = "CAST(NULL AS INTEGER)"


def floor_hour(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment):
    floor = floor_hour(moment)
    return floor if floor == moment else floor + ONE_HOUR


def _ceil_day(hour):
    """The first UTC midnight at or after a whole hour."""
    floor = hour.replace(hour=0)
    return floor if floor == hour else floor + ONE_DAY


def _is_utc_midnight(moment):
    moment = moment.astimezone(UTC)
    return moment == moment.replace(hour=0, minute=0, second=0, microsecond=0)


def pieces(start, end):
    """[start, end) as (rollup, low, high) ranges of the fewest rows: minutes at the edges,
    whole hours next to them, whole UTC days between."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first_hour, last_hour = _ceil_hour(start), floor_hour(end)
    if first_hour >= last_hour:
        return [(UsageMinute, start, end)]
    found = [(UsageMinute, start, first_hour)] if start < first_hour else []
    first_day, last_day = _ceil_day(first_hour), last_hour.replace(hour=0)
    if first_day < last_day:
        if first_hour < first_day:
            found.append((UsageHour, first_hour, first_day))
        found.append((UsageDay, first_day.date(), last_day.date()))
        if last_day < last_hour:
            found.append((UsageHour, last_day, last_hour))
    else:
        found.append((UsageHour, first_hour, last_hour))
    if last_hour < end:
        found.append((UsageMinute, last_hour, end))
    return found


class RollupRead:
    """The parts of one statement over one account's rollups (all accounts' with user None),
    narrowed by the filters given. Add parts, then `run` once.

    With `recent_minutes`, the minutes of a span (a chart's) are totalled per minute once,
    and the per-minute chart, the busiest minute and the totals within that span are read
    from those totals."""

    def __init__(self, user, *, token_id=None, model_name=None, line_id=None, ok=None):
        # Where the ORM would read the rollups from: a page's read replica, if there is one.
        self.db = connections[router.db_for_read(UsageMinute)]
        conditions, self.scope_params = [], []
        for column, value in (
            ("user_id", user.pk if user is not None else None),
            ("token_id", token_id or None),
            ("model", model_name or None),
            ("line_id", line_id or None),
            ("ok", ok),
        ):
            if value is not None:
                conditions.append(f"{column} = %s")
                self.scope_params.append(value)
        self.scope = " AND ".join(conditions) or "1 = 1"
        self.user = user
        self.recent = None
        self.parts, self.params, self.tags = [], [], {}
        # Typed: PostgreSQL matches a UNION's columns pair by pair, from the left.
        self.no_moment = f"CAST(NULL AS {self.db.data_types['DateTimeField']})"

    def _table(self, model):
        return self.db.ops.quote_name(model._meta.db_table)

    def _bound(self, model, value):
        if model is UsageDay:
            return self.db.ops.adapt_datefield_value(value)
        return self.db.ops.adapt_datetimefield_value(value)

    def recent_minutes(self, low, high):
        """Totals the minutes of [low, high) per minute, for the parts added after."""
        self.recent = (low, high)

    def total(self, model, low, high):
        """Adds the sums of [low, high) of a rollup, as one row, and returns its tag; a range
        added before is not read twice. Within the recent minutes, they are summed from
        those, and the row's `peak` is the busiest minute's requests."""
        key = (model, low, high)
        if key in self.tags:
            return self.tags[key]
        tag = self.tags[key] = f"t{len(self.tags)}"
        recent = self.recent
        # Table names, tags and column lists come from this module, never from input.
        if model is UsageMinute and recent and recent[0] <= low <= high <= recent[1]:
            sums = ", ".join(_sum(name) for name in SUMS)
            self.parts.append(
                f"SELECT '{tag}', {self.no_moment}, {NO_DAY}, '', {sums}, "  # noqa: S608
                "COALESCE(MAX(requests), 0) FROM recent WHERE bucket >= %s AND bucket < %s"
            )
        else:
            self.parts.append(
                f"SELECT '{tag}', {self.no_moment}, {NO_DAY}, '', {', '.join(SUMS.values())}, "  # noqa: S608
                f"0 FROM {self._table(model)} WHERE {self.scope} AND bucket >= %s AND bucket < %s"
            )
            self.params += self.scope_params
        self.params += [self._bound(model, low), self._bound(model, high)]
        return tag

    def busiest_minute(self, low, high):
        """Adds the requests of the busiest minute of [low, high), as the `peak` of one row,
        and returns its tag. Outside the recent minutes, only the requests are totalled per
        minute: a whole day of minutes is the most rows a dashboard reads."""
        recent = self.recent
        if recent and recent[0] <= low <= high <= recent[1]:
            return self.total(UsageMinute, low, high)
        key = ("busiest", low, high)
        if key in self.tags:
            return self.tags[key]
        tag = self.tags[key] = f"t{len(self.tags)}"
        self.parts.append(
            f"SELECT '{tag}', {self.no_moment}, {NO_DAY}, '', 0, 0, 0, 0, 0, 0, 0, "  # noqa: S608
            f"COALESCE(MAX(requests), 0) FROM (SELECT {_sum('requests')} AS requests FROM "
            f"{self._table(UsageMinute)} WHERE {self.scope} AND bucket >= %s AND bucket < %s "
            "GROUP BY bucket) AS minutes"
        )
        self.params += [*self.scope_params, self._bound(UsageMinute, low)]
        self.params.append(self._bound(UsageMinute, high))
        return tag

    def per_minute(self, low):
        """Adds a row per recent minute from `low` on, tagged "minute"."""
        self.parts.append(
            f"SELECT 'minute', bucket, {NO_DAY}, '', {', '.join(SUMS)}, requests FROM recent "  # noqa: S608
            "WHERE bucket >= %s"
        )
        self.params.append(self._bound(UsageMinute, low))
        return "minute"

    def per_day_and_model(self, day_starts):
        """Adds requests, errors and cost per model and day, tagged "day": a day is numbered
        by its place in `day_starts` (the UTC moments the days begin at), and an hour counts
        in the day it begins in. Days that are UTC days (a viewer in UTC, the default) are
        read from the day rollup, a row per token and model where the hours have 24."""
        utc_days = all(_is_utc_midnight(start) for start in day_starts)
        rollup = UsageDay if utc_days else UsageHour
        starts = [start.astimezone(UTC).date() for start in day_starts] if utc_days else day_starts
        numbers = range(len(starts) - 1, 0, -1)
        day = "0"
        if numbers:
            day = "CASE " + " ".join(f"WHEN bucket >= %s THEN {n}" for n in numbers) + " ELSE 0 END"
        self.parts.append(
            f"SELECT 'day', {self.no_moment}, {day}, model, {SUMS['requests']}, "  # noqa: S608
            f"{SUMS['errors']}, 0, 0, {SUMS['cost']}, 0, 0, 0 FROM {self._table(rollup)} "
            f"WHERE {self.scope} AND bucket >= %s GROUP BY 3, 4"
        )
        self.params += [self._bound(rollup, start) for start in reversed(starts[1:])]
        self.params += [*self.scope_params, self._bound(rollup, starts[0])]
        return "day"

    def models_used(self, since):
        """Adds the names of the models called from the day `since` on, whatever the filters
        but the user, tagged "model": those that answered at least once, or that we price;
        never a name that only ever failed (a typo, a model that does not exist), which a
        client can send as anything."""
        mine = "user_id = %s AND " if self.user is not None else ""
        self.parts.append(
            f"SELECT 'model', {self.no_moment}, {NO_DAY}, model, 0, 0, 0, 0, 0, 0, 0, 0 "  # noqa: S608
            f"FROM {self._table(UsageDay)} WHERE {mine}bucket >= %s AND model <> '' AND (ok OR "
            f"model IN (SELECT model FROM {self._table(ModelPrice)})) GROUP BY model"
        )
        self.params += [self.user.pk] if self.user is not None else []
        self.params.append(self._bound(UsageDay, since))
        return "model"

    def run(self):
        """Runs the statement: {tag: [row as a dict of COLUMNS]}, sums as int (0 for none,
        in SQL), `at` a UTC datetime."""
        if not self.parts:
            return {}
        sql, params = " UNION ALL ".join(self.parts), self.params
        if self.recent:
            sums = ", ".join(f"{expression} AS {name}" for name, expression in SUMS.items())
            sql = (
                f"WITH recent AS (SELECT bucket, {sums} FROM {self._table(UsageMinute)} "  # noqa: S608
                f"WHERE {self.scope} AND bucket >= %s AND bucket < %s GROUP BY bucket) {sql}"
            )
            low, high = (self._bound(UsageMinute, moment) for moment in self.recent)
            params = [*self.scope_params, low, high, *params]
        found = defaultdict(list)
        with self.db.cursor() as cursor:
            cursor.execute(sql, params)
            for values in cursor.fetchall():
                row = dict(zip(COLUMNS, values, strict=True))
                if isinstance(row["at"], str):
                    row["at"] = datetime.fromisoformat(row["at"])
                if row["at"] and row["at"].tzinfo is None:  # SQLite's are naive, in UTC
                    row["at"] = row["at"].replace(tzinfo=UTC)
                found[row["tag"]].append(row)
        return found
