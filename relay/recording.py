"""From a call's outcome to its charge and its log record, before the answer's last byte.

The charge comes from the money held for the call (billing.holds); the record goes to the
recorder (relay.recorder), which journals it and writes it with the next flush.
"""

import time
from collections import Counter
from decimal import Decimal

from django.conf import settings

from billing.holds import HoldBook
from billing.pricing import PART_MULTIPLIERS, CostBreakdown
from logs.writer import RequestRecord
from relay import metering
from relay.calls import Call, Outcome, Reservation
from relay.metering import NO_USAGE
from relay.recorder import Recorder
from tokens.cache import TokenSnapshot

ZERO = Decimal(0)
# What a log row says for a model name we do not price: the name itself is the client's text.
UNKNOWN_MODEL = "(unknown model)"


def settle(book: HoldBook, recorder: Recorder, call: Call, outcome: Outcome) -> int | None:
    """Charges the call's outcome from what was held for it, and records it. Returns what was
    charged, in micro-dollars; None when the call had nothing held (nothing to charge). A call
    that is not authenticated has nobody to charge and no log row."""
    token, reservation = call.token, call.reservation
    if token is None:
        return None
    if reservation is None:  # refused before any money was held: it costs nothing
        recorder.add(request_record(call, token, outcome))
        return None
    usage = outcome.usage or NO_USAGE
    breakdown = metering.price(reservation.price, reservation.line, usage)
    cost = breakdown.cost if outcome.usage is not None else 0
    charged = _finish(book, call, token, reservation, cost)
    from_quota = reservation.limited and charged > 0
    record = request_record(
        call, token, outcome, cost=charged, breakdown=breakdown, from_quota=from_quota
    )
    recorder.add(record)
    return charged


def let_go(book: HoldBook, call: Call) -> None:
    """What was held for a call that ends with no answer is free again."""
    if call.token is not None and call.reservation is not None:
        _finish(book, call, call.token, call.reservation, 0)


def _finish(
    book: HoldBook, call: Call, token: TokenSnapshot, reservation: Reservation, cost: int
) -> int:
    """Ends the reservation, charging `cost` from it; returns what was charged (less than the
    cost only when even the lease had not that much)."""
    call.reservation = None
    return book.finish(
        user_id=token.user_id,
        token_id=token.id,
        limited=reservation.limited,
        reserved=reservation.amount,
        cost=cost,
    )


def request_record(
    call: Call,
    token: TokenSnapshot,
    outcome: Outcome,
    *,
    cost: int = 0,
    breakdown: CostBreakdown | None = None,
    from_quota: bool = False,
) -> RequestRecord:
    """The log record of a call: `cost` what was charged, at `breakdown`; `from_quota` when it
    came from the token's quota lease as well."""
    if not outcome.logged and cost:
        # A record without a row is counted again by a journal replay: it must cost nothing.
        raise ValueError("A charged request always gets its log row.")
    usage = outcome.usage or NO_USAGE
    return RequestRecord(
        id=call.id,
        created_at=call.created_at,
        user_id=token.user_id,
        token_id=token.id,
        line_id=token.line_id,
        channel_id=outcome.channel_id,
        endpoint=call.endpoint,
        model=_model_name(call),
        stream=call.stream,
        client_ip=call.client_ip,
        status=outcome.status,
        error_code=outcome.error_code,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        usage_estimated=usage.estimated,
        cost=cost,
        model_multiplier=breakdown.model_multiplier if breakdown else ZERO,
        completion_multiplier=breakdown.completion_multiplier if breakdown else ZERO,
        line_multiplier=breakdown.line_multiplier if breakdown else ZERO,
        call_price=breakdown.call_price if breakdown else 0,
        per_call=breakdown.per_call if breakdown else False,
        latency_ms=int((time.perf_counter() - call.started) * 1000),
        ttft_ms=outcome.ttft_ms,
        retries=outcome.retries,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        audio_input_tokens=usage.audio_input_tokens,
        audio_output_tokens=usage.audio_output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        image_tokens=usage.image_tokens,
        **(_part_multipliers(breakdown) if breakdown else NO_PART_MULTIPLIERS),
        quota_hold=from_quota,
        logged=outcome.logged,
    )


NO_PART_MULTIPLIERS = dict.fromkeys(PART_MULTIPLIERS, ZERO)


def _part_multipliers(breakdown: CostBreakdown) -> dict[str, Decimal]:
    return {name: getattr(breakdown, name) for name in PART_MULTIPLIERS}


def _model_name(call: Call) -> str:
    # A name we do not price is whatever the client sent: it is not kept.
    model = call.model if call.price is not None or not call.model else UNKNOWN_MODEL
    # Any string parses as a model name (lone surrogates, NUL): a log row must hold only what
    # every database can store.
    return model[:100].encode("utf-8", "replace").decode().replace("\x00", "")


class RefusalRows:
    """A token's refused requests get log rows up to GATEWAY_REFUSALS_LOGGED_PER_MINUTE a
    minute (per process); the rest are only counted, in the rollups."""

    def __init__(self) -> None:
        self.minute = 0
        self.counts: Counter[int] = Counter()  # token id → refusals this minute

    def allowed(self, token_id: int) -> bool:
        minute = int(time.time()) // 60
        if minute != self.minute:
            self.minute, self.counts = minute, Counter()
        self.counts[token_id] += 1
        return self.counts[token_id] <= settings.GATEWAY_REFUSALS_LOGGED_PER_MINUTE
