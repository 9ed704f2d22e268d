"""The cost of a request, in exact arithmetic. Pure functions: no database, no settings.

    cost = (input_weight + output_weight) × model_multiplier × line_multiplier × base_price

    input_weight  = uncached_input + cache_read × cache_read_multiplier
                  + cache_write_5m × cache_write_5m_multiplier
                  + cache_write_1h × cache_write_1h_multiplier
                  + audio_input × audio_input_multiplier
    output_weight = (text_output + audio_output × audio_output_multiplier) × completion_multiplier

prompt_tokens and completion_tokens are totals: the cache reads and writes and the audio are
parts of prompt_tokens (uncached_input is what remains), reasoning and audio output parts of
completion_tokens. Every component multiplier defaults to 1, so a request without components
costs (prompt_tokens + completion_tokens × completion_multiplier) × model × line × base.

base_price is $0.002 per 1,000 tokens, i.e. 2 micro-dollars per token. The result is rounded
half-up to the micro-dollar. Models priced per call cost call_price × line_multiplier.

The arithmetic is done on integers: each decimal multiplier is an exact fraction, so the cost
is one fraction N / D, rounded once. Exact, and fast enough for the gateway's hot path.
"""

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# A multiplier: a Decimal (as the database keeps it) or a whole number; never a float.
Multiplier = Decimal | int

BASE_PRICE_PER_1K_TOKENS = Decimal("0.002")  # dollars
MICROS_PER_TOKEN = 2  # $0.002 / 1,000 tokens = 2 micro-dollars per token

# The parts of the input priced at a multiplier of their own (as Tokens and Rates name them).
INPUT_PARTS = ("cache_read", "cache_write_5m", "cache_write_1h", "audio_input")
# Every part priced apart, and its multiplier's name on a price, a breakdown and a log row.
PRICED_PARTS = (*INPUT_PARTS, "audio_output")
PART_MULTIPLIERS = tuple(f"{part}_multiplier" for part in PRICED_PARTS)
ONE = Decimal(1)


@functools.lru_cache(maxsize=1024)
def _ratio(value: Multiplier) -> tuple[int, int]:
    # A price has a few multipliers, asked on every request: worked out once each. Equal
    # multipliers (2, Decimal("2"), Decimal("2.00")) share an entry: their ratio is the same.
    return Decimal(value).as_integer_ratio()


def _round_half_up(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (2 * remainder >= denominator)


@dataclass(frozen=True, slots=True)
class Rates:
    """What each kind of token costs relative to the model's price: an uncached input token is
    1, an output token `completion`; the parts' multipliers are relative to input (audio
    output to output)."""

    completion: Multiplier = 1
    cache_read: Multiplier = 1
    cache_write_5m: Multiplier = 1
    cache_write_1h: Multiplier = 1
    audio_input: Multiplier = 1
    audio_output: Multiplier = 1


@dataclass(frozen=True, slots=True)
class Tokens:
    """A request's tokens: the totals, and the parts of them priced apart. Parts beyond their
    total are cut to it (input parts in the order of INPUT_PARTS), so none is ever negative."""

    prompt: int = 0
    completion: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    audio_input: int = 0
    audio_output: int = 0
    reasoning: int = 0  # part of the output, priced as output: shown, not priced apart

    def __post_init__(self) -> None:
        if not (
            self.cache_read
            or self.cache_write_5m
            or self.cache_write_1h
            or self.audio_input
            or self.audio_output
            or self.reasoning
        ):  # no parts: most requests, on the gateway's hot path
            if self.prompt < 0 or self.completion < 0:
                raise ValueError("token counts cannot be negative")
            return
        for name in ("prompt", "completion", *INPUT_PARTS, "audio_output", "reasoning"):
            if getattr(self, name) < 0:
                raise ValueError("token counts cannot be negative")
        left = self.prompt
        for name in INPUT_PARTS:
            part = min(getattr(self, name), left)
            object.__setattr__(self, name, part)
            left -= part
        object.__setattr__(self, "audio_output", min(self.audio_output, self.completion))
        object.__setattr__(self, "reasoning", min(self.reasoning, self.completion))

    @classmethod
    def of(cls, counted: Any) -> "Tokens":
        """The tokens of anything that names them as a log row does (prompt_tokens,
        cache_read_tokens, …): a usage, a breakdown."""
        return cls(
            counted.prompt_tokens,
            counted.completion_tokens,
            counted.cache_read_tokens,
            counted.cache_write_5m_tokens,
            counted.cache_write_1h_tokens,
            counted.audio_input_tokens,
            counted.audio_output_tokens,
            counted.reasoning_tokens,
        )

    @property
    def uncached_input(self) -> int:
        return (
            self.prompt
            - self.cache_read
            - self.cache_write_5m
            - self.cache_write_1h
            - self.audio_input
        )

    @property
    def text_output(self) -> int:
        return self.completion - self.audio_output


def _token_fraction(
    tokens: Tokens, rates: Rates, model_multiplier: Multiplier, line_multiplier: Multiplier
) -> tuple[int, int]:
    """The cost as one fraction: the weighted tokens summed exactly, then the multipliers."""
    cn, cd = _ratio(rates.completion)
    mn, md = _ratio(model_multiplier)
    ln, ld = _ratio(line_multiplier)
    if tokens.prompt == tokens.uncached_input and not tokens.audio_output:  # no parts
        numerator = (tokens.prompt * cd + tokens.completion * cn) * mn * ln * MICROS_PER_TOKEN
        return numerator, cd * md * ld
    # uncached input + text output × completion, over cd
    numerator, denominator = tokens.uncached_input * cd + tokens.text_output * cn, cd
    for name in INPUT_PARTS:
        count = getattr(tokens, name)
        if count:
            pn, pd = _ratio(getattr(rates, name))
            numerator, denominator = numerator * pd + count * pn * denominator, denominator * pd
    if tokens.audio_output:
        an, ad = _ratio(rates.audio_output)
        numerator = numerator * ad * cd + tokens.audio_output * an * cn * denominator
        denominator *= ad * cd
    return numerator * mn * ln * MICROS_PER_TOKEN, denominator * md * ld


def _call_fraction(call_price: int, line_multiplier: Multiplier) -> tuple[int, int]:
    ln, ld = _ratio(line_multiplier)
    return call_price * ln, ld


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """Every factor of a charge, so that a page can show how the figure came about."""

    prompt_tokens: int
    completion_tokens: int
    model_multiplier: Decimal
    completion_multiplier: Decimal
    line_multiplier: Decimal
    call_price: int  # micro-dollars; 0 unless per_call
    per_call: bool
    cost: int  # micro-dollars, rounded half-up
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_multiplier: Multiplier = ONE
    cache_write_5m_multiplier: Multiplier = ONE
    cache_write_1h_multiplier: Multiplier = ONE
    audio_input_multiplier: Multiplier = ONE
    audio_output_multiplier: Multiplier = ONE

    @property
    def tokens(self) -> Tokens:
        return Tokens.of(self)

    @property
    def rates(self) -> Rates:
        return Rates(self.completion_multiplier, *(getattr(self, n) for n in PART_MULTIPLIERS))

    @property
    def uncached_input_tokens(self) -> int:
        return self.tokens.uncached_input

    @property
    def has_components(self) -> bool:
        """Whether any part of the usage is priced apart (cache, audio)."""
        return self.tokens.uncached_input != self.prompt_tokens or bool(self.audio_output_tokens)

    def parts(self) -> list[tuple[str, int, Decimal, Decimal]]:
        """Each kind of token the request used: (what, tokens, its multiplier relative to an
        input token, weighted tokens). Their weighted tokens add up to weighted_tokens."""
        tokens = self.tokens
        completion = Decimal(self.completion_multiplier)
        rows = [
            ("Input", tokens.uncached_input, ONE),
            ("Cached input read", tokens.cache_read, Decimal(self.cache_read_multiplier)),
            ("Cache write (5 min)", tokens.cache_write_5m, Decimal(self.cache_write_5m_multiplier)),
            ("Cache write (1 h)", tokens.cache_write_1h, Decimal(self.cache_write_1h_multiplier)),
            ("Audio input", tokens.audio_input, Decimal(self.audio_input_multiplier)),
            ("Output", tokens.text_output, completion),
            ("Audio output", tokens.audio_output, completion * self.audio_output_multiplier),
        ]  # fmt: skip
        return [
            (what, count, rate, count * rate)
            for what, count, rate in rows
            if count or what in {"Input", "Output"}
        ]

    @property
    def weighted_tokens(self) -> Decimal:
        """The tokens weighted by their multipliers: the input-token equivalent charged."""
        numerator, denominator = _token_fraction(self.tokens, self.rates, 1, 1)
        return Decimal(numerator) / Decimal(denominator * MICROS_PER_TOKEN)

    @property
    def exact_cost(self) -> Decimal:
        """The unrounded cost in micro-dollars."""
        if self.per_call:
            numerator, denominator = _call_fraction(self.call_price, self.line_multiplier)
        else:
            numerator, denominator = _token_fraction(
                self.tokens, self.rates, self.model_multiplier, self.line_multiplier
            )
        return Decimal(numerator) / Decimal(denominator)


def token_cost(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    model_multiplier: Multiplier,
    completion_multiplier: Multiplier,
    line_multiplier: Multiplier,
    parts: Tokens | None = None,
    rates: Rates | None = None,
) -> CostBreakdown:
    """The cost of tokens: `parts` the usage's components (its totals must be the prompt and
    completion tokens given), `rates` their multipliers (completion's is the one given)."""
    tokens = parts or Tokens(int(prompt_tokens), int(completion_tokens))
    if parts is not None and (parts.prompt, parts.completion) != (prompt_tokens, completion_tokens):
        raise ValueError("the parts are of other totals")
    if rates is not None and rates.completion != completion_multiplier:
        raise ValueError("the rates are of another completion multiplier")
    rates = rates or Rates(completion_multiplier)
    numerator, denominator = _token_fraction(tokens, rates, model_multiplier, line_multiplier)
    return CostBreakdown(
        prompt_tokens=tokens.prompt,
        completion_tokens=tokens.completion,
        model_multiplier=Decimal(model_multiplier),
        completion_multiplier=Decimal(completion_multiplier),
        line_multiplier=Decimal(line_multiplier),
        call_price=0,
        per_call=False,
        cost=_round_half_up(numerator, denominator),
        cache_read_tokens=tokens.cache_read,
        cache_write_5m_tokens=tokens.cache_write_5m,
        cache_write_1h_tokens=tokens.cache_write_1h,
        audio_input_tokens=tokens.audio_input,
        audio_output_tokens=tokens.audio_output,
        reasoning_tokens=tokens.reasoning,
        cache_read_multiplier=rates.cache_read,
        cache_write_5m_multiplier=rates.cache_write_5m,
        cache_write_1h_multiplier=rates.cache_write_1h,
        audio_input_multiplier=rates.audio_input,
        audio_output_multiplier=rates.audio_output,
    )


def call_cost(
    *,
    call_price: int,
    line_multiplier: Multiplier,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> CostBreakdown:
    if call_price < 0:
        raise ValueError("a call price cannot be negative")
    numerator, denominator = _call_fraction(int(call_price), line_multiplier)
    return CostBreakdown(
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
        model_multiplier=Decimal(1),
        completion_multiplier=Decimal(1),
        line_multiplier=Decimal(line_multiplier),
        call_price=int(call_price),
        per_call=True,
        cost=_round_half_up(numerator, denominator),
    )


def token_cost_ceiling(
    prompt_tokens: int,
    completion_tokens: int,
    model_multiplier: Multiplier,
    line_multiplier: Multiplier,
    rates: Rates,
) -> int:
    """The most these tokens can cost, rounded up, in micro-dollars: what to hold before a
    request is served. Every prompt token is counted at the dearest input rate (a cache write
    can cost more than a plain input token), every completion token at the dearer output rate.
    """
    in_n, in_d, out_n, out_d = _dearest(rates)
    mn, md = _ratio(model_multiplier)
    ln, ld = _ratio(line_multiplier)
    numerator = (prompt_tokens * in_n * out_d + completion_tokens * out_n * in_d) * mn * ln
    denominator = in_d * out_d * md * ld
    return -(-numerator * MICROS_PER_TOKEN // denominator)


@functools.lru_cache(maxsize=1024)
def _dearest(rates: Rates) -> tuple[int, int, int, int]:
    """The dearest input and output rates as fractions: (input n, d, output n, d)."""
    dearest_input = max(Decimal(1), *(Decimal(getattr(rates, name)) for name in INPUT_PARTS))
    dearest_output = Decimal(rates.completion) * max(Decimal(1), Decimal(rates.audio_output))
    return (*_ratio(dearest_input), *_ratio(dearest_output))


def call_cost_ceiling(call_price: int, line_multiplier: Multiplier) -> int:
    numerator, denominator = _call_fraction(call_price, line_multiplier)
    return -(-numerator // denominator)


def per_million(multiplier: Multiplier) -> int:
    """Micro-dollars for one million tokens at this combined multiplier."""
    numerator, denominator = _ratio(multiplier)
    return _round_half_up(numerator * MICROS_PER_TOKEN * 1_000_000, denominator)
