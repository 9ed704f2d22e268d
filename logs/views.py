import csv
import functools
import io
import itertools
import uuid
from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.db.models import Case, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.staff import staff_may_enter
from billing.pricing import PART_MULTIPLIERS, PRICED_PARTS
from console.lib.params import id_param
from console.lib.permissions import permission_required
from console.lib.streaming import in_chunks
from logs import stats
from logs.forms import LogFilterForm, RequestIdForm
from logs.models import PlatformMinute, RequestLog, UsageHour
from tokens.models import Token, granted_line_ids

PAGE_SIZE = 50
IP_PERIODS = {"1d": 1, "7d": 7, "30d": 30, "90d": 90}


def _get_log_for_user(request, request_id):
    try:
        key = uuid.UUID(str(request_id))
    except ValueError:
        raise Http404("No such request.") from None
    try:
        return RequestLog.objects.get(pk=key, user_id=request.user.pk)
    except RequestLog.DoesNotExist:
        raise Http404("No such request.") from None


def filtered_logs(request, form):
    """The user's log rows under the form's filters, newest first, as one index range."""
    rows = RequestLog.objects.filter(user_id=request.user.pk)
    start, end = form.bounds()
    if start:
        rows = rows.filter(id__gte=RequestLog.id_floor(start))
    if end:
        rows = rows.filter(id__lt=RequestLog.id_floor(end))
    data = form.cleaned_data if form.is_valid() else {}
    if data.get("token"):
        rows = rows.filter(token_id=data["token"].pk)
    if data.get("model"):
        rows = rows.filter(model=data["model"])
    if data.get("line"):
        rows = rows.filter(line_id=data["line"].pk)
    if data.get("status") == "ok":
        rows = rows.filter(status__lt=400)
    elif data.get("status") == "error":
        rows = rows.filter(status__gte=400)
    if data.get("ip"):
        rows = rows.filter(client_ip=data["ip"])
    return rows.order_by("-id")


def _figures(request, form):
    """Requests and tokens per minute of the rows the filters select, from the rollups (no
    pace when a filter is not kept there: an IP address), for the top of the log page and its
    refresh."""
    filters = form.rollup_filters()
    pace = None
    if filters is not None:
        start, end = form.bounds()
        tz = timezone.get_current_timezone()
        pace = stats.selection_pace(request.user, start, end, tz, **filters)
    return {
        "pace": pace,
        "pace_summary": stats.summary(pace.series) if pace and pace.series else "",
        "figures_url": f"{reverse('logs:list')}?{form.query()}&part=figures",
    }


@login_required
def log_list(request):
    # A request id pasted in the search box opens that request, if it is this user's: another
    # user's request is "not found", like one that never existed.
    finder = RequestIdForm(request.GET if "request_id" in request.GET else None)
    if finder.is_bound and finder.is_valid():
        key = finder.cleaned_data["request_id"]
        if RequestLog.objects.filter(pk=key, user_id=request.user.pk).exists():
            return redirect("logs:breakdown", request_id=key)
        finder.not_found(key)
    form = LogFilterForm(request.GET or {"period": "24h"}, user=request.user)
    if request.htmx and request.GET.get("part") == "figures":
        return render(request, "logs/list.html#log-figures", _figures(request, form))
    rows = filtered_logs(request, form)
    cursor = request.GET.get("after")
    if cursor:
        try:
            rows = rows.filter(id__lt=uuid.UUID(cursor))
        except ValueError:
            cursor = None
    page = list(rows[: PAGE_SIZE + 1])
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    tokens = {t.pk: t for t in Token.objects.filter(user=request.user)}
    for row in page:
        row.token_obj = tokens.get(row.token_id)
    context = {
        "form": form,
        "rows": page,
        # One reverse() for the page, not two per row.
        "breakdown_base": reverse("logs:breakdown", args=["0"]).removesuffix("0/"),
        "next_cursor": str(page[-1].id) if more else None,
        "first_page": not cursor,
        "query": form.query(),
        "has_tokens": bool(tokens),
        "estimated": any(row.usage_estimated for row in page),
    }
    if request.htmx and cursor:
        return render(request, "logs/list.html#log-rows", context)
    context.update(finder=finder, **_figures(request, form))
    return render(request, "logs/list.html", context)


@login_required
def log_breakdown(request, request_id):
    row = _get_log_for_user(request, request_id)
    breakdown = row.breakdown
    context = {
        "row": row,
        "breakdown": breakdown,
        "formula_cost": _formula_cost(breakdown),
        "token": Token.objects.filter(pk=row.token_id, user=request.user).first(),
    }
    template = "logs/breakdown.html#breakdown" if request.htmx else "logs/breakdown.html"
    return render(request, template, context)


def _formula_cost(breakdown):
    from billing.pricing import call_cost, token_cost

    if breakdown.per_call:
        return call_cost(
            call_price=breakdown.call_price, line_multiplier=breakdown.line_multiplier
        ).cost
    return token_cost(
        prompt_tokens=breakdown.prompt_tokens,
        completion_tokens=breakdown.completion_tokens,
        model_multiplier=breakdown.model_multiplier,
        completion_multiplier=breakdown.completion_multiplier,
        line_multiplier=breakdown.line_multiplier,
        parts=breakdown.tokens,
        rates=breakdown.rates,
    ).cost


# The usage's parts and their multipliers: last, so that readers of the older columns keep working.
PART_COLUMNS = [
    *(f"{part}_tokens" for part in PRICED_PARTS), "reasoning_tokens", "image_tokens",
    *PART_MULTIPLIERS,
]  # fmt: skip

CSV_COLUMNS = [
    "request_id", "time", "token", "model", "line", "status", "error", "prompt_tokens",
    "completion_tokens", "estimated", "cost_usd", "model_multiplier", "completion_multiplier",
    "line_multiplier", "latency_ms", "ttft_ms", "client_ip", "stream", "endpoint",
    *PART_COLUMNS,
]  # fmt: skip


@login_required
def log_export(request):
    """The filtered log as CSV, streamed: memory stays flat however many rows it has."""
    form = LogFilterForm(request.GET or {"period": "24h"}, user=request.user)
    rows = filtered_logs(request, form)
    tz = timezone.get_current_timezone()
    header = io.StringIO()
    csv.writer(header).writerow([f"time ({tz})" if c == "time" else c for c in CSV_COLUMNS])
    if connection.vendor == "postgresql":
        body = _csv_by_copy(rows, tz)
    else:
        body = _csv_in_python(rows, request.user, tz)
    response = StreamingHttpResponse(
        in_chunks(itertools.chain([header.getvalue().encode()], body)),
        content_type="text/csv; charset=utf-8",
    )
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="requests-{stamp}.csv"'
    return response


def _csv_by_copy(rows, tz):
    """PostgreSQL writes the CSV itself (COPY … TO STDOUT): hundreds of thousands of rows a
    second, where formatting each row in Python manages about ten thousand."""
    table = RequestLog._meta.db_table
    exported = rows.annotate(
        x_time=RawSQL(  # noqa: S611 (a fixed expression; the zone name is a parameter)
            f"to_char({table}.created_at AT TIME ZONE %s, 'YYYY-MM-DD HH24:MI:SS.MS')", [str(tz)]
        ),
        x_token=Coalesce("token__name", Value("")),
        x_line=Coalesce("line__name", Value("")),
        x_estimated=Case(When(usage_estimated=True, then=Value("yes")), default=Value("")),
        x_cost=RawSQL(f"to_char({table}.cost / 1000000.0, 'FM999999999990.000000')", []),  # noqa: S611
        x_stream=Case(When(stream=True, then=Value("yes")), default=Value("")),
    ).values_list(
        "id", "x_time", "x_token", "model", "x_line", "status", "error_code", "prompt_tokens",
        "completion_tokens", "x_estimated", "x_cost", "model_multiplier",
        "completion_multiplier", "line_multiplier", "latency_ms", "ttft_ms", "client_ip",
        "x_stream", "endpoint", *PART_COLUMNS,
    )  # fmt: skip
    sql, params = exported.query.sql_with_params()
    pending, size = [], 0
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
    ):
        for block in copy:  # a block is one row: gather them into chunks of 256 kB
            pending.append(bytes(block))
            size += len(block)
            if size >= 256 * 1024:
                yield b"".join(pending)
                pending, size = [], 0
    yield b"".join(pending)


def _csv_in_python(rows, user, tz):
    """The same CSV, a thousand rows per chunk, where COPY is not available (SQLite)."""
    from billing.models import Line

    token_names = dict(Token.objects.filter(user=user).values_list("pk", "name"))
    line_names = dict(Line.objects.values_list("pk", "name"))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    values = rows.values_list(
        "id", "created_at", "token_id", "model", "line_id", "status", "error_code",
        "prompt_tokens", "completion_tokens", "usage_estimated", "cost", "model_multiplier",
        "completion_multiplier", "line_multiplier", "latency_ms", "ttft_ms", "client_ip",
        "stream", "endpoint", *PART_COLUMNS,
    )  # fmt: skip
    for count, row in enumerate(values.iterator(chunk_size=2000), start=1):
        (request_id, created, token_id, model, line_id, status, error, prompt, completion,
         estimated, cost, mm, cm, lm, latency, ttft, ip, stream, endpoint) = row[:19]  # fmt: skip
        writer.writerow([
            request_id, created.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            token_names.get(token_id, ""), model, line_names.get(line_id, ""), status, error,
            prompt, completion, "yes" if estimated else "",
            f"{cost // 1_000_000}.{cost % 1_000_000:06d}", mm, cm, lm, latency,
            "" if ttft is None else ttft, ip or "", "yes" if stream else "", endpoint,
            *row[19:],
        ])  # fmt: skip
        if count % 1000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


@login_required
def ip_list(request):
    """Every address that used this user's tokens in a period: the first thing to check."""
    period = request.GET.get("period", "7d")
    days = IP_PERIODS.get(period, 7)
    token_id = id_param(request.GET.get("token"))
    rows = stats.addresses(request.user, days, token_id=token_id, per_token=True)
    tokens = {t.pk: t for t in Token.objects.filter(user=request.user)}
    entries = [dict(row, token=tokens.get(row["token_id"])) for row in rows[:1000]]
    return render(
        request,
        "logs/ips.html",
        {"entries": entries, "period": period, "periods": IP_PERIODS, "tokens": tokens.values()},
    )


def staff_only(view):
    """Staff pages answer 404 to everyone else: their existence is nobody else's business.
    Staff enter as they enter the admin, with their second factor."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise Http404("No such page.")
        if not staff_may_enter(request):
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        return view(request, *args, **kwargs)

    return wrapper


@staff_only
@permission_required("logs.view_platform")
def staff_dashboard(request):
    """Platform-wide traffic, spend, top users and models, and the channels' health in total
    (per channel, in the admin's channel list)."""

    now = timezone.now()
    tz = timezone.get_current_timezone()
    midnight = stats.local_midnight(now, tz)
    minute_rows = PlatformMinute.objects.filter(bucket__gte=now - timedelta(hours=1))
    series = stats.platform_series(minute_rows, now, tz)
    today = stats.totals(PlatformMinute.objects.filter(bucket__gte=midnight))
    top_users = stats.top(UsageHour.objects.filter(bucket__gte=midnight), "user_id")
    emails = dict(
        User.objects.filter(pk__in=[r["user_id"] for r in top_users]).values_list("pk", "email")
    )
    for row in top_users:
        row["email"] = emails.get(row["user_id"], f"user {row['user_id']}")
    channels = {
        "hour": stats.channel_totals(now - timedelta(hours=1)),
        "day": stats.channel_totals(now - timedelta(days=1)),
    }
    return render(
        request,
        "logs/staff.html",
        {
            "series": series,
            "series_summary": stats.summary(series),
            "today": today,
            "top_users": top_users,
            "top_models": stats.top(PlatformMinute.objects.filter(bucket__gte=midnight), "model"),
            "channels": channels,
        },
    )


@login_required
def token_usage(request, pk):
    """A token's spend and requests over time, the addresses that used it, and its last calls."""
    token = get_object_or_404(Token.objects.of_owner(request.user), pk=pk)
    granted = granted_line_ids(request.user)
    tz = timezone.get_current_timezone()
    since = timezone.now() - timedelta(days=30)
    recent = RequestLog.objects.filter(user_id=request.user.pk, token_id=token.pk).order_by("-id")
    context = {
        "token": token,
        "status": token.status_for_owner(granted),
        "spend": stats.daily_spend_by_model(request.user, 30, tz, token_id=token.pk),
        "totals": stats.since(request.user, since, token_id=token.pk),
        "ips": list(stats.addresses(request.user, 30, token_id=token.pk)[:200]),
        "recent": recent[:10],
    }
    return render(request, "logs/token.html", context)
