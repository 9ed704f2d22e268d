"""Fuzzing the gateway's request parsing against a live server, over HTTP, with alice's key.

Almost every request here is one the gateway must refuse: bad JSON, wrong types, bodies over
the size limit, odd encodings and framings, unknown paths and methods. For each example the
answer must be a 4xx in the OpenAI error shape, within a timeout; nothing may be sent upstream,
held or charged; and the request's log row must be written. The gateway's periodic flush is
slowed down and each example flushes by hand, so that a request that breaks the batch fails
with its own input. After each run the server is stopped: no money may be held or spent.

One test sends valid requests with odd values in the fields the gateway passes on unread:
there the upstream may answer, and then the bill must be exact.

The examples are derandomized (the same in CI as on a laptop) and no example database is kept.
"""

import asyncio
import json
import logging
import socket
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from billing.models import Account, Hold, LedgerEntry
from logs.models import RequestLog
from relay.handlers import api_call
from tests.conftest import balance_of, ledger_sum
from tests.fuzzing import fuzz_settings
from tests.relay.conftest import wait_until

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS)
MODEL = {
    CHAT: "gpt-4o-mini",
    COMPLETIONS: "gpt-3.5-turbo-instruct",
    EMBEDDINGS: "text-embedding-3-small",
}
REQUIRED = {CHAT: "messages", COMPLETIONS: "prompt", EMBEDDINGS: "input"}
VALID = {
    CHAT: {"model": MODEL[CHAT], "messages": [{"role": "user", "content": "Hello"}]},
    COMPLETIONS: {"model": MODEL[COMPLETIONS], "prompt": "Say hi"},
    EMBEDDINGS: {"model": MODEL[EMBEDDINGS], "input": "hello"},
}
# Fields the gateway reads; noise never uses these names, so that it cannot mend a broken body.
KNOWN = {
    "model",
    "messages",
    "prompt",
    "input",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "best_of",
}
SAMPLING = [
    "temperature",
    "top_p",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "logit_bias",
    "user",
    "seed",
    "logprobs",
    "response_format",
    "tools",
    "dimensions",
    "encoding_format",
    "suffix",
    "echo",
    "best_of",
]
# What the fake upstream's usage costs at the prices of tests/relay/conftest.py, micro-dollars:
# chat (12 + 5 × 4) × 0.075 × 2 = 4.8, completions (7 + 2 × 1.333333) × 0.75 × 2 = 14.5 (just
# under), embeddings 6 × 0.01 × 2 = 0.12.
COST = {CHAT: 5, COMPLETIONS: 14, EMBEDDINGS: 0}
LIMIT = 1024 * 1024  # GATEWAY_MAX_BODY_BYTES for these tests; read by the gateway per request
TIMEOUT = 10.0
EXAMPLES = 200
FUZZ = fuzz_settings(EXAMPLES, HealthCheck.large_base_example)


# Strategies

# Text with everything JSON can carry: lone surrogates (sent as \ud800 escapes; made more likely
# than Hypothesis would by itself), NUL, control characters.
any_text = st.text(
    st.characters(exclude_categories=()) | st.characters(categories=["Cs"]), max_size=12
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=8,
)
noise_keys = any_text.filter(lambda key: key not in KNOWN)
# Extra fields: sampling parameters with odd values, and unknown names.
noise = st.dictionaries(st.sampled_from(SAMPLING) | noise_keys, json_values, max_size=3)
endpoints = st.sampled_from(ENDPOINTS)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=utf-16",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/octet-stream",
        "",
        "*/*",
    ]
)
not_a_string = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.lists(scalars)
    | (st.dictionaries(any_text, scalars))
)
not_a_positive_whole_number = (
    st.booleans()
    | st.integers(max_value=0)
    | st.floats()  # 5.0 too: JSON 5.0 is a float, not a whole number
    | any_text
    | st.lists(scalars, max_size=3)
    | st.dictionaries(any_text, scalars, max_size=3)
)
huge_whole_number = st.integers(min_value=10**10, max_value=10**4000)  # no balance covers it
unknown_model = (
    st.sampled_from(
        [
            "gpt-4o-mini\ud800",
            "\udfff",
            "gpt-4o-mini\x00",
            " gpt-4o-mini",
            "gpt-4o-mini ",
            "GPT-4O-MINI",
            "x" * 1000,
            "gpt-4o-mini\u200b",
        ]
    )
    | any_text
).filter(lambda name: name not in MODEL.values())


@st.composite
def field_mistakes(draw):
    """(endpoint, payload) with at least one mistake in a field the gateway checks itself."""
    endpoint = draw(endpoints)
    payload = {**VALID[endpoint], **draw(noise)}
    required = REQUIRED[endpoint]
    kinds = [
        "model",
        "required",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
    ]
    if endpoint == COMPLETIONS:
        kinds.append("best_of")
    if endpoint == CHAT:
        kinds.append("messages_not_a_list")
    if endpoint != EMBEDDINGS:  # embeddings hold nothing for completions, so any size passes
        kinds.append("huge_max_tokens")
    mistakes = [draw(st.sampled_from(kinds))]  # one, often alone; sometimes more
    mistakes += draw(st.lists(st.sampled_from(kinds), max_size=2, unique=True))
    for kind in dict.fromkeys(mistakes):
        if kind == "model":
            how = draw(st.sampled_from(["missing", "not_a_string", "blank", "unknown"]))
            if how == "missing":
                payload.pop("model")
            elif how == "not_a_string":
                payload["model"] = draw(not_a_string)
            elif how == "blank":
                payload["model"] = draw(st.text(" \t\r\n\u3000\xa0", max_size=5))
            else:
                payload["model"] = draw(unknown_model)
        elif kind == "required":
            how = draw(st.sampled_from(["missing", None, "", ()]))
            if how == "missing":
                payload.pop(required)
            else:
                payload[required] = list(how) if how == () else how
        elif kind == "messages_not_a_list":
            payload["messages"] = draw(
                any_text.filter(bool)
                | st.dictionaries(any_text, scalars, max_size=3)
                | st.integers()
                | st.floats(allow_nan=False)
                | st.booleans()
            )
        elif kind == "stream":
            # Not a boolean, and not null either (null means "no stream", as for OpenAI).
            payload["stream"] = draw(
                not_a_string.filter(lambda v: v is not None and not isinstance(v, bool))
            )
        elif kind == "stream_options":
            # Not an object (nor null), or an object whose include_usage is not a boolean; as
            # often with "stream": true, where the gateway reads it, as without.
            if draw(st.booleans()):
                payload.setdefault("stream", True)
            payload["stream_options"] = draw(
                not_a_string.filter(lambda v: v is not None and not isinstance(v, dict))
                | any_text
                | st.builds(
                    lambda v: {"include_usage": v},
                    not_a_string.filter(lambda v: v is not None and not isinstance(v, bool))
                    | any_text,
                )
            )
        elif kind in {"n", "best_of"}:
            payload[kind] = draw(
                not_a_positive_whole_number | st.integers(min_value=129, max_value=10**30)
            )
        elif kind == "huge_max_tokens":
            payload[draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))] = draw(
                huge_whole_number
            )
        else:
            payload[kind] = draw(not_a_positive_whole_number)
    return endpoint, payload


class Body(bytes):
    """Request bytes that print short in a falsifying example."""

    def __new__(cls, data, label=""):
        body = super().__new__(cls, data)
        body.label = label
        return body

    def __repr__(self):
        if len(self) <= 400:
            return f"Body({bytes(self)!r})"
        head, tail = bytes(self[:80]), bytes(self[-40:])
        return f"Body({head!r} … {tail!r}: {len(self)} bytes, {self.label})"


def as_json(payload, ascii_only):
    text = json.dumps(payload, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8 on purpose


def as_utf8_json(payload, ascii_only):
    """Valid UTF-8 whatever the payload holds: lone surrogates go as \\ud800 escapes."""
    try:
        return json.dumps(payload, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload).encode()


@st.composite
def bad_json(draw):
    """(endpoint, body, codes): bytes that are not one JSON object in UTF-8, and the error
    codes they may get (a JSON object without a model is the model's fault, not the JSON's)."""
    endpoint = draw(endpoints)
    payload = {**VALID[endpoint], **draw(noise)}
    valid = json.dumps(payload).encode()
    kind = draw(
        st.sampled_from(
            [
                "random_bytes",
                "truncated",
                "not_an_object",
                "list_of_requests",
                "whitespace",
                "control_character",
                "trailing_garbage",
                "bom",
                "utf16",
                "utf32",
                "latin1",
                "invalid_utf8",
                "python_literals",
                "single_quotes",
                "too_many_digits",
            ]
        )
    )
    label = kind
    if kind == "random_bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "truncated":
        body = valid[: draw(st.integers(0, len(valid) - 1))]
    elif kind == "not_an_object":
        body = json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    elif kind == "list_of_requests":
        body = json.dumps([payload] * draw(st.integers(1, 3))).encode()
    elif kind == "whitespace":
        body = draw(st.text(" \t\r\n", max_size=20)).encode()
    elif kind == "control_character":
        # A raw control character is never valid JSON, inside a string or between tokens.
        control = draw(st.sampled_from([chr(c) for c in range(32) if chr(c) not in "\t\n\r"]))
        at = draw(st.integers(0, len(valid)))
        body = valid[:at] + control.encode() + valid[at:]
    elif kind == "trailing_garbage":
        tail = draw(st.sampled_from([b"\x00", b"x", b"}", b",", b"{}", valid, b"\xff"]))
        body = valid + tail
    elif kind == "bom":
        body = b"\xef\xbb\xbf" + valid
    elif kind in {"utf16", "utf32"}:
        codec = draw(st.sampled_from([f"{kind[:3]}-{kind[3:]}", f"{kind[:3]}-{kind[3:]}-le"]))
        body = json.dumps(payload, ensure_ascii=draw(st.booleans())).encode(codec, "surrogatepass")
    elif kind == "latin1":
        marked = {**payload, REQUIRED[endpoint]: "caf\xe9"}  # \xe9 then a quote: not UTF-8
        body = json.dumps(marked, ensure_ascii=False).encode("latin-1", "backslashreplace")
    elif kind == "invalid_utf8":
        bad = draw(
            st.sampled_from(
                [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
            )
        )
        marked = {**payload, REQUIRED[endpoint]: "@@@"}
        body = json.dumps(marked).encode().replace(b"@@@", b"a" + bad + b"b")
    elif kind == "python_literals":
        body = repr(payload).encode("utf-8", "surrogatepass")
    elif kind == "single_quotes":
        body = valid.replace(b'"', b"'")
    else:  # an integer longer than Python's int parsing allows
        body = valid[:-1] + b', "max_tokens": 1' + b"0" * 5000 + b"}"
    codes = {"invalid_json"}
    if kind == "random_bytes":
        codes.add("invalid_request")
    return endpoint, Body(body, label), codes


@st.composite
def malformed_contents(draw):
    """(endpoint, payload): messages, prompt or input of a JSON type no OpenAI endpoint accepts
    (role names are left alone: providers differ on those)."""
    endpoint = draw(endpoints)
    payload = dict(VALID[endpoint])
    not_an_object = st.none() | st.booleans() | st.integers() | any_text | st.lists(scalars)
    if endpoint == CHAT:
        good = {"role": "user", "content": "Hello"}
        bad_message = st.one_of(
            not_an_object,
            st.builds(dict, content=st.just("Hello")),  # no role
            st.builds(lambda role: {"role": role, "content": "Hi"}, not_a_string),
            st.builds(
                lambda content: {"role": "user", "content": content},
                st.booleans()
                | st.integers()
                | st.floats(allow_nan=False)
                | st.dictionaries(any_text, scalars, min_size=1),
            ),
            st.builds(
                lambda parts: {"role": "user", "content": parts},
                st.lists(not_an_object, min_size=1, max_size=3),
            ),
        )
        bad = draw(st.lists(bad_message, min_size=1, max_size=3))
        messages = draw(st.permutations([*bad, *([good] * draw(st.integers(0, 2)))]))
        payload["messages"] = messages
    else:
        field = REQUIRED[endpoint]
        bad_item = (
            st.none()
            | st.booleans()
            | st.floats(allow_nan=False)
            | st.dictionaries(any_text, scalars, min_size=1)
        )
        payload[field] = draw(
            st.booleans()
            | st.integers().filter(bool)
            | st.floats(allow_nan=False).filter(bool)
            | st.dictionaries(any_text, scalars, min_size=1)
            | st.lists(bad_item, min_size=1, max_size=3)
            | st.lists(st.lists(bad_item | any_text, min_size=1, max_size=3), min_size=1)
        )
    return endpoint, payload


not_null = not_a_string.filter(lambda value: value is not None)
# Each field the gateway reads, and values of it the gateway must refuse as that field's fault.
WRONG_VALUES = {
    "model": not_a_string | st.text(" \t\r\n\u3000\xa0", max_size=5),
    "stream": not_null.filter(lambda value: not isinstance(value, bool)) | any_text,
    "stream_options": not_null.filter(lambda value: not isinstance(value, dict))
    | any_text
    | st.builds(
        lambda value: {"include_usage": value},
        not_null.filter(lambda value: not isinstance(value, bool)) | any_text,
    ),
    "max_tokens": not_a_positive_whole_number,
    "max_completion_tokens": not_a_positive_whole_number,
    "n": not_a_positive_whole_number | st.integers(129, 10**30),
    "best_of": not_a_positive_whole_number | st.integers(129, 10**30),  # completions only
}


@st.composite
def one_wrong_field(draw):
    """(endpoint, payload, field): a valid request but for one field the gateway reads, of a
    wrong type or out of bounds; streamed or not."""
    endpoint = draw(endpoints)
    extra = {key: value for key, value in draw(noise).items() if key not in KNOWN}
    payload = {**VALID[endpoint], **extra, "stream": draw(st.sampled_from([None, False, True]))}
    fields = [f for f in WRONG_VALUES if f != "best_of" or endpoint == COMPLETIONS]
    field = draw(st.sampled_from([*fields, REQUIRED[endpoint]]))
    if field == REQUIRED[endpoint]:
        payload[field] = draw(st.sampled_from([None, "", []]))
    else:
        # Wrong for the field, but JSON: NaN and infinities are no JSON values at all.
        payload[field] = draw(WRONG_VALUES[field].filter(is_json))
    return endpoint, payload, field


def is_json(value):
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


@st.composite
def odd_sampling(draw):
    """(endpoint, payload): a valid request with odd values in fields passed on upstream."""
    endpoint = draw(endpoints)
    payload = {**VALID[endpoint], **draw(noise.filter(bool))}
    if draw(st.booleans()):
        payload.update(with_text(endpoint, draw(any_text.filter(lambda text: text.strip()))))
    if draw(st.booleans()):
        depth = draw(st.integers(1, 3_000))
        nested = 0
        for _ in range(depth):
            nested = [nested]
        payload["metadata"] = nested
    return endpoint, payload


def with_text(endpoint, text):
    """A valid request for the endpoint, whose prompt (message, input) is `text`."""
    if endpoint == CHAT:
        return {**VALID[CHAT], "messages": [{"role": "user", "content": text}]}
    return {**VALID[endpoint], REQUIRED[endpoint]: text}


def chunks_of(body, cuts):
    """The body as a chunked upload, cut at the given points (httpx sends an iterator chunked)."""
    points = sorted({min(cut, len(body)) for cut in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    return iter([piece for piece in pieces if piece])


transports = st.sampled_from(["length", "chunked"])


# The harness


class Probe:
    """Sends requests to the live server and checks what each one did."""

    def __init__(self, site, key, upstream, user):
        from console.asgi import gateway

        self.site = site
        self.key = key
        self.upstream = upstream
        self.user = user
        self.gateway = gateway
        self.loop = gateway.flusher.get_loop()
        self.client = httpx.Client(base_url=site.url, timeout=TIMEOUT)
        self.errors = []
        self.handler = _Collect(self.errors)
        for name in ("relay", "logs", "billing", "uvicorn.error"):
            logging.getLogger(name).addHandler(self.handler)
        self.start_balance = balance_of(user)
        self.sent = 0
        self.statuses = Counter()  # what the examples got, printed at the end (pytest -s)
        self._wait_for_the_first_flush()

    def _wait_for_the_first_flush(self):
        """The server flushes once on its own as it starts: an example answered meanwhile could
        have its row written by that flush after the probe looked for it. A first request,
        whose row is waited for, gets that flush out of the way."""
        response = self.client.get("/v1/models", headers={"Authorization": f"Bearer {self.key}"})
        self.write_logs()
        wait_until(
            lambda: RequestLog.objects.filter(id=response.headers["x-request-id"]).exists(),
            message="the log row of a first request",
        )

    def close(self):
        if self.sent:
            answers = dict(sorted(self.statuses.items(), key=lambda kv: str(kv[0])))
            print(f"{self.sent} requests; answers: {answers}")
            self.sent = 0
        self.client.close()
        for name in ("relay", "logs", "billing", "uvicorn.error"):
            logging.getLogger(name).removeHandler(self.handler)

    def send(
        self,
        method,
        path,
        body=b"",
        *,
        content_type="application/json",
        chunked=None,
        headers=None,
        auth=True,
    ):
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self.key}"
        if content_type is not None:
            sent["Content-Type"] = content_type
        content = chunks_of(body, chunked) if chunked is not None else body
        self.sent += 1
        self.errors.clear()  # the server log shown on a failure is this request's
        try:
            return self.client.request(method, path, content=content, headers=sent)
        except httpx.TimeoutException:
            raise AssertionError(
                f"no answer within {TIMEOUT}s to {method} {path}{self.server_log()}"
            ) from None

    def server_log(self):
        return ("\nServer log:\n" + "\n".join(self.errors[-3:])) if self.errors else ""

    def state(self):
        account = Account.objects.get(user=self.user)
        return (
            account.balance,
            account.held,
            LedgerEntry.objects.filter(account=account, kind=LedgerEntry.Kind.USAGE).count(),
            Hold.objects.count(),
            len(self.upstream.received),
        )

    def write_logs(self):
        """Runs the gateway's flush now, in its own event loop; raises what it raised."""
        error = self._flush()
        if error is not None:
            raise error

    def _flush(self):
        future = asyncio.run_coroutine_threadsafe(self.gateway.flush(), self.loop)
        try:
            future.result(TIMEOUT)
        except Exception as error:
            # Drop the batch the gateway kept for a retry, so that the next example is judged
            # on its own; this one fails.
            asyncio.run_coroutine_threadsafe(_drop_records(self.gateway), self.loop).result(TIMEOUT)
            failure = AssertionError(
                f"the gateway could not write the log row of this request: {error!r}; its "
                f"flush keeps failing, for every later request too{self.server_log()}"
            )
            failure.__cause__ = error
            return failure
        return None

    def refused(self, response, before, *, logged=True, shaped=True, leases=False):
        """The answer is a 4xx in the OpenAI shape, logged, and nothing was spent or sent.
        With `leases`, money held from earlier requests may be given back meanwhile."""
        flush_error = self._flush()  # first, so that no example leaves work for the next one
        after = self.state()
        status = response.status_code
        self.statuses[status] += 1
        assert 400 <= status < 500, (
            f"status {status}, not a 4xx: {response.text[:300]}{self.server_log()}"
        )
        error = None
        if shaped:
            assert response.headers.get("content-type", "").startswith("application/json"), (
                response.headers
            )
            try:
                body = response.json()
            except ValueError:
                raise AssertionError(f"not JSON: {response.content[:300]!r}") from None
            assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
            error = body["error"]
            assert isinstance(error.get("message"), str) and error["message"].strip(), body
            assert isinstance(error.get("type"), str) and error["type"], body
            assert response.headers.get("x-request-id"), response.headers
            # The OpenAI SDKs retry a 409, 429 or 5xx unless told not to: a 4xx is the
            # request's own fault, and the same request fails again.
            assert response.headers.get("x-should-retry") == "false", (
                f"a {status} without x-should-retry: false: {dict(response.headers)}"
            )
        if flush_error is not None:
            raise flush_error
        assert after[4] == before[4], (
            f"the upstream received {after[4] - before[4]} request(s): "
            f"{self.upstream.received[before[4] :]!r}"[:1000]
        )
        compared = [0, 2] if leases else [0, 1, 2, 3]
        assert [after[i] for i in compared] == [before[i] for i in compared], (
            f"(balance, held, usage entries, holds) went from {before[:4]} to {after[:4]}"
        )
        if logged:
            row = RequestLog.objects.filter(id=response.headers["x-request-id"]).first()
            assert row is not None, "the request has no log row"
            assert (row.status, row.cost) == (status, 0), (row.status, row.cost)
        return error

    def nothing_spent_in_the_end(self):
        """Stops the server (its last flush gives back every hold) and checks the money."""
        self.close()
        self.site.stop()
        wait_until(lambda: not Hold.objects.exists(), message="holds released")
        account = Account.objects.get(user=self.user)
        assert (account.balance, account.held) == (self.start_balance, 0)
        assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()
        assert ledger_sum(self.user) == account.balance
        assert not RequestLog.objects.filter(cost__gt=0).exists()


class _Collect(logging.Handler):
    def __init__(self, into):
        super().__init__(logging.ERROR)
        self.into = into
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.into.append(self.format(record))


async def _drop_records(gateway):
    gateway.recorder.records = []
    gateway.recorder.unsent = {}
    gateway.recorder.set_aside = {}


@pytest.fixture
def hand_flush(settings):
    """The tests flush by hand, after each example. Set before the server starts: its flush
    loop reads the interval as it starts waiting, and a flush of its own running meanwhile
    would take an example's log row out from under the probe's."""
    settings.GATEWAY_FLUSH_SECONDS = 3600


@pytest.fixture
def probe(settings, hand_flush, live_site, token_and_key, channel, upstream, funded):
    settings.GATEWAY_MAX_BODY_BYTES = LIMIT
    # Every example's refusal gets its own row, which the probe looks for.
    settings.GATEWAY_REFUSALS_LOGGED_PER_MINUTE = 10**9
    _token, key = token_and_key
    probe = Probe(live_site, key, upstream, funded)
    yield probe
    probe.close()


# The tests


def test_bad_json_is_refused_with_invalid_json(probe):
    @FUZZ
    @given(
        case=bad_json(),
        content_type=content_types,
        transport=transports,
        cuts=st.lists(st.integers(0, 2000), max_size=4),
    )
    def run(case, content_type, transport, cuts):
        endpoint, body, codes = case
        before = probe.state()
        response = probe.send(
            "POST",
            endpoint,
            body,
            content_type=content_type,
            chunked=cuts if transport == "chunked" else None,
        )
        error = probe.refused(response, before)
        assert response.status_code == 400, (response.status_code, error)
        assert error["code"] in codes, error

    run()
    probe.nothing_spent_in_the_end()


def test_deeply_nested_json_is_refused(probe):
    """Nesting is cheap to send (two bytes a level) and costly to parse."""

    @FUZZ
    @given(
        endpoint=endpoints,
        depth=st.sampled_from([100, 1_000, 5_000, 9_990, 10_000, 50_000, 150_000])
        | st.integers(1, 150_000),
        shape=st.sampled_from(["arrays", "objects"]),
        where=st.sampled_from(["bare", "in_a_field", "in_the_messages"]),
    )
    def run(endpoint, depth, shape, where):
        opening, inner, closing = ("[", "", "]") if shape == "arrays" else ('{"a":', "0", "}")
        nested = opening * depth + inner + closing * depth
        if where == "bare":
            text = nested
        elif where == "in_a_field":  # no model: the body is wrong whatever the nesting
            text = '{"input": ' + nested + "}"
        else:  # an unknown model: the body is wrong whatever the nesting
            text = '{"model": "no-such-model", "messages": [{"role": "user", "content": ' + (
                nested + "}]}"
            )
        before = probe.state()
        response = probe.send("POST", endpoint, text.encode())
        error = probe.refused(response, before)
        assert response.status_code in {400, 404, 413}, error  # 413: 150,000 objects is 900 kB+

    run()
    probe.nothing_spent_in_the_end()


def test_json_only_python_accepts_is_refused(probe):
    """NaN and Infinity are not JSON (RFC 8259); Python's json module accepts them."""
    through = []
    for endpoint in ENDPOINTS:
        for constant in ("NaN", "Infinity", "-Infinity"):
            field = "temperature" if endpoint != EMBEDDINGS else "dimensions"
            body = json.dumps(VALID[endpoint])[:-1] + f', "{field}": {constant}}}'
            before = probe.state()
            response = probe.send("POST", endpoint, body.encode())
            try:
                probe.refused(response, before)
            except AssertionError as failure:
                through.append(f"{endpoint} {body}: {response.status_code}; {failure}"[:400])
    assert not through, "\n".join(through)


def test_stream_options_that_are_not_an_object_are_refused(probe):
    """Seen in production: a stream with "stream_options": "yes" was a 500 that said retry."""
    for options in ("yes", 1, True, ["include_usage"], {"include_usage": "yes"}):
        payload = {**VALID[CHAT], "stream": True, "stream_options": options}
        before = probe.state()
        response = probe.send("POST", CHAT, json.dumps(payload).encode())
        error = probe.refused(response, before)
        assert (response.status_code, error["param"]) == (400, "stream_options"), error
    probe.nothing_spent_in_the_end()


def test_wrong_types_in_the_fields_the_gateway_reads_are_refused(probe):
    @FUZZ
    @given(
        case=field_mistakes(),
        ascii_only=st.booleans(),
        content_type=content_types,
        transport=transports,
        cuts=st.lists(st.integers(0, 500), max_size=3),
    )
    def run(case, ascii_only, content_type, transport, cuts):
        endpoint, payload = case
        body = as_json(payload, ascii_only)
        before = probe.state()
        response = probe.send(
            "POST",
            endpoint,
            body,
            content_type=content_type,
            chunked=cuts if transport == "chunked" else None,
        )
        error = probe.refused(response, before)
        model_is_a_name = isinstance(payload.get("model"), str) and payload["model"].strip()
        if model_is_a_name and payload["model"] not in MODEL.values():
            expected = {400, 404}  # the body may be wrong elsewhere, before the model is looked up
        else:
            expected = {400, 404, 429}
        assert response.status_code in expected, (response.status_code, error)
        if response.status_code == 400:
            assert error.get("param") in {*KNOWN, None}, error

    run()
    probe.nothing_spent_in_the_end()


def test_one_wrong_field_is_refused_by_name(probe):
    """Every field the gateway reads, alone wrong in a request valid in every other way, is
    refused with a 400 that names it (and says not to retry): never passed on, never a 500."""

    @FUZZ
    @given(case=one_wrong_field(), ascii_only=st.booleans())
    def run(case, ascii_only):
        endpoint, payload, field = case
        before = probe.state()
        # Valid in every other way: in UTF-8, even with lone surrogates in the noise.
        response = probe.send("POST", endpoint, as_utf8_json(payload, ascii_only))
        error = probe.refused(response, before)
        assert (response.status_code, error.get("param")) == (400, field), error

    run()
    probe.nothing_spent_in_the_end()


def test_unknown_model_names_are_refused_and_logged(probe):
    """Any string can be a model name in JSON, lone surrogates and NUL among them: the answer is
    a 404 (or a 400 for a blank name) and the request's log row can still be written."""

    @FUZZ
    @given(endpoint=endpoints, model=unknown_model)
    def run(endpoint, model):
        before = probe.state()
        response = probe.send("POST", endpoint, as_json({**VALID[endpoint], "model": model}, True))
        error = probe.refused(response, before)
        expected = (404, "model_not_found") if model.strip() else (400, "invalid_request")
        assert (response.status_code, error["code"]) == expected, error

    run()
    probe.nothing_spent_in_the_end()


def test_malformed_messages_prompts_and_inputs_never_reach_the_upstream(probe):
    @FUZZ
    @given(case=malformed_contents())
    def run(case):
        endpoint, payload = case
        before = probe.state()
        response = probe.send("POST", endpoint, as_json(payload, True))
        probe.refused(response, before)

    run()
    probe.nothing_spent_in_the_end()


def test_bodies_over_the_limit_are_refused_unread(probe):
    @FUZZ
    @given(
        endpoint=endpoints,
        over=st.integers(1, 300_000),
        transport=transports,
        cuts=st.lists(st.integers(0, LIMIT + 300_000), max_size=4),
        content_type=content_types,
    )
    def run(endpoint, over, transport, cuts, content_type):
        # A request valid in every other way: only its size is wrong.
        padding = LIMIT + over - len(json.dumps(with_text(endpoint, "")))
        body = json.dumps(with_text(endpoint, "x" * padding)).encode()
        assert len(body) == LIMIT + over
        before = probe.state()
        response = probe.send(
            "POST",
            endpoint,
            body,
            content_type=content_type,
            chunked=cuts if transport == "chunked" else None,
        )
        error = probe.refused(response, before)
        assert (response.status_code, error["code"]) == (413, "request_too_large"), error

    run()
    probe.nothing_spent_in_the_end()


def test_unknown_paths_and_methods(probe):
    segment = st.text(
        "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_.~", min_size=1, max_size=12
    ).filter(lambda part: part not in {".", ".."})  # dot segments are resolved by the client
    odd_paths = st.sampled_from(
        [
            "/v1",
            "/v1/",
            "/v1/chat",
            "/v1/chat/completions/x",
            "/v1/chat/completion",
            "/v1/CHAT/COMPLETIONS",
            "/v1//chat/completions",
            "/v1/chat/completions.json",
            "/v1/engines/davinci/completions",
            "/v1/audio/speech",
            "/v1/images/edits",
            "/v1/modelsx",
        ]
    )
    paths = odd_paths | st.lists(segment, min_size=1, max_size=4).map(
        lambda parts: "/v1/" + "/".join(parts)
    )

    def served(path):
        # Served, or answered by another protocol's handler (tests/relay/test_anthropic_*,
        # test_responses_api, test_images).
        plain = path.rstrip("/")
        return (
            plain in ENDPOINTS
            or plain in ("/v1/models", "/v1/responses", "/v1/images/generations")
            or plain.startswith(("/v1/models/", "/v1/responses/", "/v1/messages"))
        )

    @FUZZ
    @given(
        case=st.one_of(
            st.tuples(st.just("POST"), paths.filter(lambda path: not served(path))),
            st.tuples(
                # Methods the HTTP parser knows (uvicorn refuses others itself, in plain text).
                st.sampled_from(
                    [
                        "GET",
                        "PUT",
                        "PATCH",
                        "DELETE",
                        "OPTIONS",
                        "TRACE",
                        "PROPFIND",
                        "MKCOL",
                        "COPY",
                        "MOVE",
                        "LOCK",
                        "UNLOCK",
                        "REPORT",
                        "PURGE",
                        "SEARCH",
                        "LINK",
                        "UNLINK",
                    ]
                ),
                st.sampled_from([*ENDPOINTS, "/v1/chat/completions/"]),
            ),
        ),
        body=st.sampled_from([b"", json.dumps(VALID[CHAT]).encode()]),
        auth=st.booleans(),
    )
    def run(case, body, auth):
        method, path = case
        before = probe.state()
        response = probe.send(method, path, body, auth=auth)
        error = probe.refused(response, before, logged=False)
        if path.rstrip("/") in ENDPOINTS:
            assert (response.status_code, error["code"]) == (405, "method_not_allowed"), error
        elif (api_call(path) or ("/v1",))[0] != "/v1":  # a call past a wrong base URL
            assert response.status_code == 404, error
            assert error["code"] in {"wrong_base_url", "unknown_url"}, error
        else:
            assert (response.status_code, error["code"]) == (404, "unknown_url"), error

    run()
    before = probe.state()
    probe.refused(probe.send("HEAD", CHAT), before, logged=False, shaped=False)
    probe.nothing_spent_in_the_end()


def test_odd_values_passed_upstream_are_answered_and_billed_exactly(probe):
    """Fields the gateway passes on unread (sampling parameters, unknown names): either the
    gateway refuses the request (then as above) or the upstream answers and the bill is exact."""

    @FUZZ
    @given(case=odd_sampling(), ascii_only=st.booleans())
    def run(case, ascii_only):
        endpoint, payload = case
        body = json.dumps(payload, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        before = probe.state()
        response = probe.send("POST", endpoint, body)
        if response.status_code != 200:
            probe.refused(response, before, leases=True)
            return
        probe.statuses["200, billed"] += 1
        assert response.json().get("object") in {"chat.completion", "text_completion", "list"}
        probe.write_logs()
        after = probe.state()
        row = RequestLog.objects.get(id=response.headers["x-request-id"])
        assert after[4] == before[4] + 1, "the upstream was not asked exactly once"
        assert (row.status, row.cost, row.usage_estimated) == (200, COST[endpoint], False)
        assert after[0] == before[0] - row.cost, (before, after, row.cost)
        assert after[2] == before[2] + (row.cost > 0), "no usage ledger entry"

    run()
    probe.close()
    probe.site.stop()
    wait_until(lambda: not Hold.objects.exists(), message="holds released")
    account = Account.objects.get(user=probe.user)
    assert account.held == 0
    spent = sum(RequestLog.objects.values_list("cost", flat=True))
    assert account.balance == probe.start_balance - spent
    assert ledger_sum(probe.user) == account.balance


# Framing that httpx will not send: raw HTTP/1.1 over a socket.


def exchange(port, data, *, half_close=False):
    """Sends raw bytes; returns (status, headers, body) of the first answer, or None when the
    server closed the connection without one. Fails on a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within {TIMEOUT}s to {data[:200]!r}") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            received += chunk
            answer = _parse_answer(received)
            if answer:
                return answer
        return _parse_answer(received, complete=True)


def _parse_answer(data, complete=False):
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        if complete and data:
            raise AssertionError(f"a broken answer: {data[:200]!r}")
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(rest) < length and not complete:
        return None
    return status, headers, rest[:length]


FRAMINGS = {
    # The declared length cuts the JSON short; the rest is a broken next request.
    "content_length_too_short": lambda body: (
        f"Content-Length: {len(body) - 7}\r\n\r\n".encode() + body
    ),
    "content_length_over_the_limit_no_body": lambda body: (
        f"Content-Length: {LIMIT * 1000}\r\n\r\n".encode()
    ),
    "content_length_over_the_limit_some_body": lambda body: (
        f"Content-Length: {LIMIT + 1}\r\n\r\n".encode() + body
    ),
    "content_length_not_a_number": lambda body: b"Content-Length: 12abc\r\n\r\n" + body,
    "content_length_negative": lambda body: b"Content-Length: -1\r\n\r\n" + body,
    "content_length_twice": lambda body: (
        f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 1}\r\n\r\n".encode() + body
    ),
    "chunked_and_content_length": lambda body: (
        f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    ),
    "chunk_size_not_hex": lambda body: b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body,
    "chunk_size_lies": lambda body: (
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(body) - 5:x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    ),
    "chunked_over_the_limit": lambda body: (
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{LIMIT + 10:x}\r\n".encode()
        + b"x" * (LIMIT + 10)
        + b"\r\n0\r\n\r\n"
    ),
    "chunked_truncated_json": lambda body: (
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(body) - 3:x}\r\n".encode()
        + body[:-3]
        + b"\r\n0\r\n\r\n"
    ),
}
HALF_CLOSED = {
    # The client stops sending before the declared body is complete.
    "content_length_too_long": lambda body: (
        f"Content-Length: {len(body) + 100}\r\n\r\n".encode() + body
    ),
    "chunked_cut_off": lambda body: b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + body,
}


def test_broken_http_framing(probe):
    """Length and chunking mistakes. Those the HTTP server (uvicorn) catches before the gateway
    answer in uvicorn's own words; those that reach the gateway in the OpenAI shape."""
    port = probe.site.port
    # No model: whichever way a server reads the framing, the gateway must refuse the body.
    body = json.dumps({"messages": VALID[CHAT]["messages"], "max_tokens": 5}).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {probe.key}\r\nContent-Type: application/json\r\n"
    ).encode()
    for name, framing in FRAMINGS.items():
        before = probe.state()
        answer = exchange(port, head + framing(body))
        assert answer is not None, f"{name}: the connection closed without an answer"
        status, headers, content = answer
        response = httpx.Response(status, headers=headers, content=content)
        # The gateway answered if there is a request id; otherwise it is uvicorn's plain 400.
        gateway_answered = "x-request-id" in headers
        try:
            probe.refused(response, before, logged=gateway_answered, shaped=gateway_answered)
        except AssertionError as failure:
            raise AssertionError(f"{name}: {failure}") from failure
    for name, framing in HALF_CLOSED.items():
        before = probe.state()
        answer = exchange(port, head + framing(body), half_close=True)
        probe.write_logs()
        assert probe.state() == before, name
        if answer is not None:
            assert 400 <= answer[0] < 500, (name, answer)
    probe.nothing_spent_in_the_end()
