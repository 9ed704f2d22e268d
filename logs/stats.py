"""Figures for dashboards and charts, read from the rollup tables only, never the raw log.

Buckets are stored in UTC. Series keep one point per UTC bucket and label it in the viewer's
time zone, so that a DST change never merges or drops a bucket; days are local days, each hour
counted in the one local day it starts in.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Max, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from logs.models import ChannelMinute, IpDay, UsageMinute
from logs.rollups import SUMS, RollupRead, floor_hour, pieces

ONE_MINUTE = timedelta(minutes=1)
RANGES = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24)}
DAY_RANGES = {"7d": 7, "30d": 30}


def _floor_minute(moment):
    return moment.replace(second=0, microsecond=0)


def local_midnight(now, tz):
    local = now.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _scoped(model, user, token_id=None, model_name=None, line_id=None, ok=None):
    """A rollup's rows of one user (everybody's with None), narrowed by the filters given."""
    rows = model.objects.filter(user_id=user.pk) if user is not None else model.objects.all()
    if token_id:
        rows = rows.filter(token_id=token_id)
    if model_name:
        rows = rows.filter(model=model_name)
    if line_id:
        rows = rows.filter(line_id=line_id)
    if ok is not None:
        rows = rows.filter(ok=ok)
    return rows


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: int = 0
    cache_read_tokens: int = 0  # of prompt_tokens
    cache_write_tokens: int = 0  # of prompt_tokens

    @property
    def tokens(self):
        return self.prompt_tokens + self.completion_tokens

    @property
    def cached_share(self):
        """The percentage of prompt tokens read from a vendor's cache; None without any."""
        if not self.prompt_tokens:
            return None
        return 100 * self.cache_read_tokens / self.prompt_tokens

    @property
    def success_rate(self):
        if not self.requests:
            return None
        return 100 * (self.requests - self.errors) / self.requests


def totals(rows):
    figures = rows.aggregate(
        all_requests=Sum("requests"),
        all_errors=Sum("requests", filter=Q(ok=False)),
        all_prompt=Sum("prompt_tokens"),
        all_completion=Sum("completion_tokens"),
        all_cost=Sum("cost"),
    )
    return Totals(
        requests=figures["all_requests"] or 0,
        errors=figures["all_errors"] or 0,
        prompt_tokens=figures["all_prompt"] or 0,
        completion_tokens=figures["all_completion"] or 0,
        cost=figures["all_cost"] or 0,
    )


def since(user, start, *, end=None, **filters):
    """Totals from `start` to now (or `end`); `filters` as `_scoped` takes them."""
    return windows(user, {"span": start}, end=end, **filters)["span"]


def windows(user, starts, *, end=None, **filters):
    """Totals for several windows ending now (or `end`), in one query whatever their number,
    each from the coarsest rollups that cover it (logs.rollups.pieces). A window counts the
    minutes that begin in it. `filters` as `_scoped` takes them."""
    end = end or timezone.now()
    read = RollupRead(user, **filters)
    tags = {
        name: [read.total(*piece) for piece in pieces(start, end)] for name, start in starts.items()
    }
    found = read.run()
    return {name: _summed(found, parts) for name, parts in tags.items()}


def _summed(found, tags):
    """The Totals of the rows of `tags` in what a RollupRead found."""
    totals_ = Totals()
    for tag in tags:
        for row in found.get(tag, ()):
            for name in SUMS:
                setattr(totals_, name, getattr(totals_, name) + row[name])
    return totals_


@dataclass
class Card:
    balance: int
    spend_today: int
    spend_7d: int
    spend_30d: int
    requests_today: int
    rpm: int
    tpm: int
    peak_rpm: int
    success_rate: float | None
    tokens_today: int = 0
    cached_share_today: float | None = None  # percent of today's prompt tokens


@dataclass
class Dashboard:
    cards: Card
    series: dict  # labels, requests, tokens and errors of each minute, as _series gives them
    spend: dict | None  # as daily_spend_by_model gives it, when asked for
    called: bool  # requests were found; without, there may still be older ones
    models: list | None = None  # as used_models gives them, when asked for


def dashboard(
    user, balance, tz, *, span, days=None, models=False, token_id=None, model_name=None, now=None
):
    """The dashboard in one query over the rollups: the cards (the balance is the account's,
    whatever the filters; the rest follows the token and model chosen, all with None), the
    chart of each minute over `span`, with `days` the spend per day and model, and with
    `models` the models for the filter list (as used_models gives them)."""
    now = (now or timezone.now()).astimezone(UTC)
    midnight = local_midnight(now, tz)
    end = _floor_minute(now) + ONE_MINUTE  # the chart ends with the minute in progress
    start = end - span
    last_minute = end - 2 * ONE_MINUTE
    read = RollupRead(user, token_id=token_id, model_name=model_name)
    read.recent_minutes(min(start, last_minute, floor_hour(now)), end)
    read.per_minute(start)
    today = [read.total(*piece) for piece in pieces(midnight, now)]
    busiest = read.busiest_minute(midnight, now)
    last = read.total(UsageMinute, last_minute, last_minute + ONE_MINUTE)
    week = [read.total(*piece) for piece in pieces(now - timedelta(days=7), now)]
    month = [read.total(*piece) for piece in pieces(now - timedelta(days=30), now)]
    day_list = _local_days(now, tz, days) if days else None
    if days:
        read.per_day_and_model([begins for _day, begins in day_list])
    if models:
        read.models_used(_models_since())
    found = read.run()
    today_figures = _summed(found, today)
    last_figures = _summed(found, [last])
    cards = Card(
        balance=balance,
        spend_today=today_figures.cost,
        spend_7d=_summed(found, week).cost,
        spend_30d=_summed(found, month).cost,
        requests_today=today_figures.requests,
        rpm=last_figures.requests,
        tpm=last_figures.tokens,
        peak_rpm=found[busiest][0]["peak"] if found.get(busiest) else 0,
        success_rate=today_figures.success_rate,
        tokens_today=today_figures.tokens,
        cached_share_today=today_figures.cached_share,
    )
    return Dashboard(
        cards=cards,
        series=_series(_by_minute(found), start, end, tz),
        spend=_spend_per_day(found.get("day", ()), day_list) if days else None,
        called=any(row["requests"] for rows in found.values() for row in rows),
        models=_model_names(found) if models else None,
    )


# The log page charts each minute of a selection up to this long; over longer ones, it gives
# the totals and the average pace.
PACE_SERIES_SPAN = timedelta(hours=24)


@dataclass
class Pace:
    """Requests and tokens per minute of a selection of the request log."""

    requests: int
    tokens: int
    errors: int
    minutes: int  # the length of the selection
    last_rpm: int | None = None  # the last whole minute, when the selection reaches now
    last_tpm: int | None = None
    peak_rpm: int | None = None  # the busiest minute, when the selection is charted
    series: dict | None = None  # as _series gives it

    @property
    def average_rpm(self):
        return self.requests / self.minutes if self.minutes else 0

    @property
    def average_tpm(self):
        return self.tokens / self.minutes if self.minutes else 0

    @property
    def success_rate(self):
        if not self.requests:
            return None
        return 100 * (self.requests - self.errors) / self.requests


def selection_pace(user, start, end, tz, *, now=None, **filters):
    """The pace of the log rows from `start` (None: as far back as logs are kept) to `end`
    (None: now) under `filters` (as `_scoped` takes them), from the rollups: every minute up
    to PACE_SERIES_SPAN, whole hours and the edges' minutes beyond."""
    now = now or timezone.now()
    if start is None:
        start = now - timedelta(days=settings.LOG_RETENTION_DAYS)
    reaches_now = end is None or end >= now
    end = now if reaches_now else end
    minutes = max(1, round((end - start).total_seconds() / 60))
    last_minute = _floor_minute(now) - ONE_MINUTE
    if end - start <= PACE_SERIES_SPAN + ONE_MINUTE:
        first, stop = _floor_minute(start), _floor_minute(end) + ONE_MINUTE
        rows = _scoped(UsageMinute, user, **filters).filter(bucket__gte=first, bucket__lt=stop)
        series = _per_minute(rows, first, stop, tz)
        pace = Pace(
            requests=sum(series["requests"]),
            tokens=sum(series["tokens"]),
            errors=sum(series["errors"]),
            minutes=minutes,
            peak_rpm=max(series["requests"], default=0),
            series=series,
        )
        if reaches_now and len(series["requests"]) >= 2:
            pace.last_rpm, pace.last_tpm = series["requests"][-2], series["tokens"][-2]
        return pace
    span = windows(user, {"span": start}, end=end, **filters)["span"]
    pace = Pace(span.requests, span.tokens, span.errors, minutes)
    if reaches_now:
        last = (
            _scoped(UsageMinute, user, **filters)
            .filter(bucket=last_minute)
            .aggregate(
                n_requests=Sum("requests"), n_tokens=Sum("prompt_tokens") + Sum("completion_tokens")
            )
        )
        pace.last_rpm, pace.last_tpm = last["n_requests"] or 0, last["n_tokens"] or 0
    return pace


def platform_series(rows, now, tz):
    end = _floor_minute(now) + timedelta(minutes=1)
    return _per_minute(rows.filter(bucket__lt=end), end - timedelta(hours=1), end, tz)


def summary(series):
    """A sentence that says what a per-minute chart shows, for those who cannot see it."""
    total = sum(series["requests"])
    if not total:
        return "No requests in this period."
    peak = max(series["requests"])
    at = series["labels"][series["requests"].index(peak)]
    return (
        f"{total:,} requests and {sum(series['tokens']):,} tokens in this period; "
        f"the busiest minute was {at} with {peak:,} requests; {sum(series['errors']):,} errors."
    )


def _per_minute(rows, start, end, tz):
    rows = rows.values("bucket").annotate(
        n_requests=Sum("requests"),
        n_errors=Sum("requests", filter=Q(ok=False)),
        n_prompt=Sum("prompt_tokens"),
        n_completion=Sum("completion_tokens"),
    )
    by_minute = {
        row["bucket"]: {
            "requests": row["n_requests"],
            "errors": row["n_errors"] or 0,
            "prompt_tokens": row["n_prompt"],
            "completion_tokens": row["n_completion"],
        }
        for row in rows
    }
    return _series(by_minute, start, end, tz)


def _by_minute(found):
    return {row["at"]: row for row in found.get("minute", ())}


def _series(by_minute, start, end, tz):
    """Requests, tokens and errors of each minute from `start` to `end` (0 for a minute not
    in `by_minute`), with its local time as the label."""
    labels, requests, tokens, errors = [], [], [], []
    same_offset = start.astimezone(tz).utcoffset() == end.astimezone(tz).utcoffset()
    local = start.astimezone(tz)
    clock = local.hour * 60 + local.minute
    moment = start
    while moment < end:
        row = by_minute.get(moment)
        if same_offset:
            # Formatting each minute with strftime is slow; with no clock change in the span,
            # counting minutes from the first local time is exact.
            labels.append(f"{clock // 60 % 24:02d}:{clock % 60:02d}")
            clock += 1
        else:
            labels.append(moment.astimezone(tz).strftime("%H:%M"))
        if row:
            requests.append(row["requests"])
            tokens.append(row["prompt_tokens"] + row["completion_tokens"])
            errors.append(row["errors"])
        else:
            requests.append(0)
            tokens.append(0)
            errors.append(0)
        moment += ONE_MINUTE
    return {"labels": labels, "requests": requests, "tokens": tokens, "errors": errors}


def daily_spend_by_model(user, days, tz, *, token_id=None, model_name=None, now=None):
    """Spend per local day and model over the last `days` days, from the hour rollup."""
    day_list = _local_days(now or timezone.now(), tz, days)
    read = RollupRead(user, token_id=token_id, model_name=model_name)
    read.per_day_and_model([begins for _day, begins in day_list])
    return _spend_per_day(read.run().get("day", ()), day_list)


def _local_days(now, tz, days):
    """The last `days` local days to today's, each with the UTC moment it begins at."""
    today = local_midnight(now, tz).astimezone(tz).date()
    day_list = [today - timedelta(days=days - 1 - i) for i in range(days)]
    return [
        (day, datetime.combine(day, datetime.min.time(), tzinfo=tz).astimezone(UTC))
        for day in day_list
    ]


def _spend_per_day(rows, day_list):
    """The spend chart from a RollupRead's "day" rows: each model's cost per day of
    `day_list` (as _spend_series gives the series), and each day's errors."""
    spend = defaultdict(lambda: defaultdict(int))
    errors = defaultdict(int)
    for row in rows:
        spend[row["model"]][row["day"]] += row["cost"]
        errors[row["day"]] += row["errors"]
    numbers = range(len(day_list))
    return {
        "labels": [day.strftime("%b %d") for day, _start in day_list],
        "models": [
            {"model": name, "cost": [costs.get(n, 0) for n in numbers], "other": other}
            for name, costs, other in _spend_series(spend)
        ],
        "errors": [errors[n] for n in numbers],
    }


# A chart shows at most this many series, each in a colour of its own (static/js/dashboard.js
# has as many); the smallest spenders beyond them are added up as one.
MAX_SERIES = 8
OTHER = "Other"


def _spend_series(spend):
    """(name, {day: cost}, is "Other") per series, biggest spender first: the models with
    spend, and the rest (models beyond MAX_SERIES - 1, rows with no model name) added up as
    "Other". A model that only failed spent nothing and has no series."""
    named = sorted(
        (name for name in spend if name and sum(spend[name].values())),
        key=lambda name: (-sum(spend[name].values()), name),
    )
    shown = named if len(named) <= MAX_SERIES else named[: MAX_SERIES - 1]
    other = defaultdict(int)
    for name, costs in spend.items():
        if name not in shown:
            for day, cost in costs.items():
                other[day] += cost
    series = [(name, spend[name], False) for name in shown]
    if any(other.values()):
        series.append((OTHER, other, True))
    return series


# Filter lists offer the models called over this many days.
MODEL_DAYS = 90


def used_models(user):
    """Models this user called recently, for filter lists, by name, from the day rollup (as
    RollupRead.models_used reads them)."""
    read = RollupRead(user)
    read.models_used(_models_since())
    return _model_names(read.run())


def _models_since():
    return (timezone.now() - timedelta(days=MODEL_DAYS)).date()


def _model_names(found):
    return sorted(row["model"] for row in found.get("model", ()))


def channel_totals(since_moment):
    """Requests, failures and latency over every channel since a moment, and how many channels
    failed at least once, for staff."""
    rows = ChannelMinute.objects.filter(bucket__gte=since_moment)
    totals = rows.aggregate(
        n_requests=Coalesce(Sum("requests"), 0),
        n_failures=Coalesce(Sum("failures"), 0),
        n_latency=Coalesce(Sum("latency_ms"), 0),
    )
    failing = rows.filter(failures__gt=0).values("channel_id").distinct().count()
    return {**totals, "failing": failing}


def top(rows, field, count=10):
    return list(
        rows.values(field)
        .annotate(
            n_requests=Sum("requests"),
            spent=Sum("cost"),
            n_tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
        )
        .order_by("-spent")[:count]
    )


def addresses(user, days, *, token_id=None, per_token=False):
    """The client IPs that used the user's tokens over the last `days` days (today included),
    most recent first: requests, first and last seen; per token too with `per_token`."""
    since = (timezone.now() - timedelta(days=days - 1)).date()
    rows = IpDay.objects.filter(user_id=user.pk, day__gte=since)
    if token_id is not None:
        rows = rows.filter(token_id=token_id)
    keys = ("client_ip", "token_id") if per_token else ("client_ip",)
    return (
        rows.values(*keys)
        .annotate(
            requests=Sum("requests"), first_seen=Min("first_seen"), last_seen=Max("last_seen")
        )
        .order_by("-last_seen")
    )
