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

from billing.models import ModelPrice
from logs.models import ChannelMinute, IpDay, UsageDay, UsageHour, UsageMinute

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


_SUMS = {
    "requests": Sum("requests"),
    "errors": Sum("requests", filter=Q(ok=False)),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "cost": Sum("cost"),
    "cache_read_tokens": Sum("cache_read_tokens"),
    "cache_write_tokens": Sum("cache_write_tokens"),
}


def _per_bucket(rows):
    return {
        row.pop("bucket"): row
        for row in rows.values("bucket").annotate(**{f"s_{k}": v for k, v in _SUMS.items()})
    }


def windows(user, starts, *, end=None, **filters):
    """Totals for several windows ending now, in two grouped queries whatever their number:
    whole hours from the hour rollup, the partial hours at the windows' edges from minutes.
    `filters` as `_scoped` takes them."""
    end = end or timezone.now()
    last_hour = end.replace(minute=0, second=0, microsecond=0)
    first_hours = {
        name: (start + timedelta(minutes=59)).replace(minute=0, second=0, microsecond=0)
        for name, start in starts.items()
    }
    edges = Q(bucket__gte=last_hour)
    for name, start in starts.items():
        edges |= Q(bucket__gte=start, bucket__lt=max(first_hours[name], start))
    earliest = min(first_hours.values())
    hours = (
        _per_bucket(
            _scoped(UsageHour, user, **filters).filter(bucket__gte=earliest, bucket__lt=last_hour)
        )
        if earliest < last_hour
        else {}
    )
    # Only the edge minutes are read (a few short index ranges), not every minute.
    minutes = _per_bucket(_scoped(UsageMinute, user, **filters).filter(edges, bucket__lt=end))
    result = {}
    for name, start in starts.items():
        first_hour = first_hours[name]
        totals_ = Totals()
        picked = [row for bucket, row in hours.items() if bucket >= first_hour]
        picked += [
            row
            for bucket, row in minutes.items()
            if start <= bucket and (bucket < first_hour or bucket >= last_hour)
        ]
        for row in picked:
            for field in _SUMS:
                setattr(totals_, field, getattr(totals_, field) + (row[f"s_{field}"] or 0))
        result[name] = totals_
    return result


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


def dashboard_cards(user, balance, tz, now=None, *, token_id=None, model_name=None):
    """The dashboard's figures: the balance (the account's, whatever the filters) and the
    spend, requests and pace of the token and model chosen (all of them with None)."""
    now = now or timezone.now()
    midnight = local_midnight(now, tz)
    filters = {"token_id": token_id, "model_name": model_name}
    spans = windows(
        user,
        {"today": midnight, "week": now - timedelta(days=7), "month": now - timedelta(days=30)},
        end=now,
        **filters,
    )
    last_minute = _floor_minute(now) - timedelta(minutes=1)
    per_minute = (
        _scoped(UsageMinute, user, **filters)
        .filter(bucket__gte=min(midnight, last_minute))
        .values("bucket")
        .annotate(
            minute_requests=Sum("requests"),
            minute_tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
        )
    )
    peak, rpm, tpm = 0, 0, 0
    for row in per_minute:
        if row["bucket"] >= midnight:
            peak = max(peak, row["minute_requests"])
        if row["bucket"] == last_minute:
            rpm, tpm = row["minute_requests"], row["minute_tokens"]
    today = spans["today"]
    return Card(
        balance=balance,
        spend_today=today.cost,
        spend_7d=spans["week"].cost,
        spend_30d=spans["month"].cost,
        requests_today=today.requests,
        rpm=rpm,
        tpm=tpm,
        peak_rpm=peak,
        success_rate=today.success_rate,
        tokens_today=today.tokens,
        cached_share_today=today.cached_share,
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
    series: dict | None = None  # as minute_series gives it

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


def minute_series(user, span, tz, *, token_id=None, model_name=None, now=None):
    """Requests, tokens and errors per minute over `span`, one point per minute."""
    now = now or timezone.now()
    # The minute in progress is the last point: requests just made show at once.
    end = _floor_minute(now) + timedelta(minutes=1)
    start = end - span
    rows = _scoped(UsageMinute, user, token_id, model_name).filter(
        bucket__gte=start, bucket__lt=end
    )
    return _per_minute(rows, start, end, tz)


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
        n_tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
    )
    by_minute = {row["bucket"]: row for row in rows}
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
        requests.append(row["n_requests"] if row else 0)
        tokens.append(row["n_tokens"] if row else 0)
        errors.append((row["n_errors"] or 0) if row else 0)
        moment += ONE_MINUTE
    return {"labels": labels, "requests": requests, "tokens": tokens, "errors": errors}


def daily_spend_by_model(user, days, tz, *, token_id=None, model_name=None, now=None):
    """Spend per local day and model over the last `days` days, from the hour rollup."""
    now = now or timezone.now()
    today = local_midnight(now, tz).astimezone(tz).date()
    first_day = today - timedelta(days=days - 1)
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=tz).astimezone(UTC)
    rows = (
        _scoped(UsageHour, user, token_id, model_name)
        .filter(bucket__gte=start)
        .values("bucket", "model")
        .annotate(spent=Sum("cost"), n_errors=Sum("requests", filter=Q(ok=False)))
    )
    spend = defaultdict(lambda: defaultdict(int))
    errors = defaultdict(int)
    for row in rows:
        day = row["bucket"].astimezone(tz).date()
        spend[row["model"]][day] += row["spent"]
        errors[day] += row["n_errors"] or 0
    day_list = [first_day + timedelta(days=i) for i in range(days)]
    return {
        "labels": [day.strftime("%b %d") for day in day_list],
        "models": [
            {"model": name, "cost": [costs.get(day, 0) for day in day_list], "other": other}
            for name, costs, other in _spend_series(spend)
        ],
        "errors": [errors[day] for day in day_list],
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


def used_models(user, days=90):
    """Models this user called recently, for filter lists, from the day rollup: those that
    answered at least once, or that we price; never a name that only ever failed (a typo, a
    model that does not exist), which a client can send as anything."""
    start = (timezone.now() - timedelta(days=days)).date()
    return list(
        _scoped(UsageDay, user)
        .filter(bucket__gte=start)
        .filter(Q(ok=True) | Q(model__in=ModelPrice.objects.values("model")))
        .exclude(model="")
        .values_list("model", flat=True)
        .distinct()
        .order_by("model")
    )


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
