"""Errors in the OpenAI shape, each saying what happened and what to do about it."""

import json
from uuid import UUID

from django.conf import settings

from console.lib.money import format_usd_price


class GatewayError(Exception):
    """An answer in the OpenAI error shape: {"error": {"message", "type", "code", "param"}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        retry: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.retry = retry  # whether a client may usefully retry as is

    def body(self) -> bytes:
        return json.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "param": self.param,
                }
            }
        ).encode()


def help_link(anchor: str) -> str:
    return f"{settings.SITE_URL}/help/#{anchor}"


def missing_key(path: str) -> GatewayError:
    return GatewayError(
        401,
        "invalid_api_key",
        f"No API key. Send it as {_key_header(path)}, with the base URL {_base_url(path)}. "
        f"See {help_link('invalid-token')}",
        type="authentication_error",
    )


def invalid_key(path: str) -> GatewayError:
    return GatewayError(
        401,
        "invalid_api_key",
        f"Invalid API key. Use a key created at {settings.SITE_URL}/tokens/ with the base URL "
        f"{_base_url(path)}, not a provider's address; a deleted or rotated key no longer "
        f"works. See {help_link('invalid-token')}",
        type="authentication_error",
    )


# Where Anthropic's protocol is served: its clients are told what they need (and its errors take
# its shape, relay.handlers.ERROR_SHAPES).
ANTHROPIC_PATHS = "/v1/messages"


def _base_url(path: str) -> str:
    # Anthropic's clients (Claude Code's ANTHROPIC_BASE_URL) add /v1 themselves.
    if path.startswith(ANTHROPIC_PATHS):
        return f"{settings.SITE_URL} (without /v1: Anthropic clients add it)"
    return f"{settings.SITE_URL}/v1"


def _key_header(path: str) -> str:
    if path.startswith(ANTHROPIC_PATHS):
        return "'x-api-key: sk-…' or 'Authorization: Bearer sk-…'"
    return "'Authorization: Bearer sk-…'"


def token_disabled(name: str) -> GatewayError:
    return GatewayError(
        403,
        "token_disabled",
        f"The API token “{name}” is disabled. Enable it at {settings.SITE_URL}/tokens/ "
        "or use another token.",
        type="permission_error",
    )


def token_expired(name: str) -> GatewayError:
    return GatewayError(
        403,
        "token_expired",
        f"The API token “{name}” has expired. Extend its expiry at {settings.SITE_URL}/tokens/ "
        "or create a new token.",
        type="permission_error",
    )


def ip_not_allowed(name: str, ip: str | None) -> GatewayError:
    return GatewayError(
        403,
        "ip_not_allowed",
        f"The API token “{name}” does not allow requests from {ip}. Add this address to its IP "
        f"allowlist at {settings.SITE_URL}/tokens/, or remove the allowlist. "
        f"See {help_link('ip-allowlist')}",
        type="permission_error",
    )


def line_not_granted(name: str, line: str) -> GatewayError:
    return GatewayError(
        403,
        # The code clients match on, from when lines were called groups: it stays as it is.
        "group_not_granted",
        f"The API token “{name}” uses the line “{line}”, which your account may not use. "
        f"Move the token to another line at {settings.SITE_URL}/tokens/, or ask support for "
        f"access. See {help_link('lines')}",
        type="permission_error",
    )


def model_not_allowed(name: str, model: str) -> GatewayError:
    return GatewayError(
        403,
        "model_not_allowed",
        f"The API token “{name}” may not call “{model}”. Allow the model in the token's settings "
        f"at {settings.SITE_URL}/tokens/. See {help_link('model-not-allowed')}",
        type="permission_error",
        param="model",
    )


def model_not_on_line(model: str, line: str) -> GatewayError:
    return GatewayError(
        403,
        "model_not_allowed",
        f"The model “{model}” is not served on the line “{line}”. "
        f"GET {settings.SITE_URL}/v1/models lists what your token can call, or move the token "
        "to another line. "
        f"See {help_link('model-not-allowed')}",
        type="permission_error",
        param="model",
    )


def unknown_model(model: str) -> GatewayError:
    return GatewayError(
        404,
        "model_not_found",
        f"The model “{model}” does not exist. GET {settings.SITE_URL}/v1/models lists the models "
        f"your token can call. See {help_link('unknown-model')}",
        param="model",
    )


def token_quota_exceeded(name: str) -> GatewayError:
    return GatewayError(
        429,
        "token_quota_exceeded",
        f"The API token “{name}” has used up its own quota (your balance may still have money). "
        f"Raise its limit or set it to unlimited quota at {settings.SITE_URL}/tokens/. "
        f"See {help_link('token-quota')}",
        type="insufficient_quota",
    )


def insufficient_balance() -> GatewayError:
    return GatewayError(
        429,
        "insufficient_quota",
        "Your balance does not cover this request. "
        f"Recharge at {settings.SITE_URL}/billing/recharge/ and retry. "
        f"See {help_link('insufficient-balance')}",
        type="insufficient_quota",
    )


def hold_refused(
    *,
    token_name: str | None,
    needed: int,
    available: int,
    held: int,
    output_tokens: int,
    explicit: bool,
    fitting_max_tokens: int,
    limit_field: str = "max_tokens",
) -> GatewayError:
    """A request refused because what it needs held is more than what is left, while some is:
    `token_name` names the token whose quota is short (None: the balance). Says what the hold
    is for, what is left, what other requests hold, and what to do (`limit_field`: the name of
    the answer's limit in the client's protocol)."""
    if token_name is not None:
        code, whose = "token_quota_exceeded", f"the API token “{token_name}” has"
        more = (
            f"raise the token's limit (or set it to unlimited quota) at {settings.SITE_URL}/tokens/"
        )
        anchor = "token-quota"
    else:
        code, whose = "insufficient_quota", "your balance has"
        more = f"recharge at {settings.SITE_URL}/billing/recharge/"
        anchor = "insufficient-balance"
    what = f"up to {output_tokens:,} output tokens" + (
        f" (its {limit_field})" if explicit else f" (the default when {limit_field} is not set)"
    )
    message = (
        f"This request needs {format_usd_price(needed)} held for its prompt and {what}, "
        f"but {whose} only {format_usd_price(available)} left"
    )
    if held:
        message += (
            f" ({format_usd_price(held)} more is held for requests in progress, free again"
            " once they end: within a few minutes at most)"
        )
    message += ". Nothing was charged. "
    if fitting_max_tokens > 0:
        message += f"Set {limit_field} to {fitting_max_tokens:,} or less, or {more}."
    else:
        message += f"Send a shorter prompt, or {more}."
    return GatewayError(429, code, f"{message} See {help_link(anchor)}", type="insufficient_quota")


def bad_json(detail: str) -> GatewayError:
    return GatewayError(
        400,
        "invalid_json",
        f"The request body is not valid JSON ({detail}). Send a JSON object with "
        "Content-Type: application/json.",
    )


def bad_field(param: str | None, message: str) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param=param)


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        "request_too_large",
        f"The request body is larger than {limit // (1024 * 1024)} MB. Send smaller images or "
        f"fewer messages. See {help_link('body-too-large')}",
    )


SERVED_PATHS = (
    "/v1/chat/completions, /v1/responses, /v1/messages, /v1/completions, /v1/embeddings, "
    "/v1/images/generations and /v1/models"
)


def unknown_path(method: str, path: str) -> GatewayError:
    return GatewayError(
        404,
        "unknown_url",
        f"Unknown API path {method} {path}. This gateway serves {SERVED_PATHS}, "
        f"at the base URL {settings.SITE_URL}/v1. See {help_link('base-url')}",
    )


def wrong_base_url(method: str, path: str, served: str, *, anthropic: bool) -> GatewayError:
    """An API call sent past the base URL's /v1 (or with another prefix): `served` is the path
    it meant, which the gateway serves at /v1/…; `anthropic`: Anthropic's Messages API, whose
    clients add /v1 themselves."""
    if anthropic:
        base = f"{settings.SITE_URL} (without /v1: Anthropic clients add it themselves)"
    else:
        base = f"{settings.SITE_URL}/v1 (with /v1, and nothing after it)"
    return GatewayError(
        404,
        "wrong_base_url",
        f"{method} {path} is not an API path: the base URL is set wrong. Set your client's "
        f"base URL to {base}; this call is served at {settings.SITE_URL}{served}. "
        f"See {help_link('base-url')}",
    )


def wrong_endpoint(model: str, kind: str) -> GatewayError:
    """A model asked for at a path that does not serve its kind: an image model anywhere but
    at /v1/images/generations, or a text model there."""
    if kind == "image":
        message = (
            f"“{model}” makes images: call POST {settings.SITE_URL}/v1/images/generations "
            "(client.images.generate in the OpenAI SDK). Nothing was charged."
        )
    else:
        message = (
            f"“{model}” is not an image model. GET {settings.SITE_URL}/v1/models lists the "
            "models your token can call; image models are served at /v1/images/generations, "
            "the others at /v1/chat/completions, /v1/responses or /v1/messages."
        )
    return GatewayError(400, "wrong_endpoint", message, param="model")


def method_not_allowed(method: str, path: str) -> GatewayError:
    return GatewayError(405, "method_not_allowed", f"{path} does not accept {method}.")


def no_channel(model: str, line: str) -> GatewayError:
    return GatewayError(
        503,
        "no_channel",
        f"No upstream channel can serve “{model}” on the line “{line}” right now. Retry in a "
        f"minute. See {help_link('no-channel')}",
        type="server_error",
        retry=True,
    )


def busy() -> GatewayError:
    return GatewayError(
        503,
        "usage_backlog",
        "We cannot record usage right now, so we are not taking requests. Retry in a minute.",
        type="server_error",
        retry=True,
    )


def upstream_failed(tries: int) -> GatewayError:
    return GatewayError(
        502,
        "upstream_error",
        f"The upstream providers failed to answer ({tries} tried). Nothing was charged; retry "
        f"after a short wait. See {help_link('failover')}",
        type="server_error",
        retry=True,
    )


def internal_error(request_id: UUID) -> GatewayError:
    return GatewayError(
        500,
        "internal_error",
        f"Something went wrong on our side. Retry; if it persists, quote request id "
        f"{request_id} to support.",
        type="server_error",
        retry=True,
    )


# Anthropic's error types by status, so that its SDKs raise their own classes
# (AuthenticationError, RateLimitError, …); the message is the same as in the OpenAI shape.
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_body(status: int, body: bytes) -> bytes:
    """An error answer in Anthropic's shape, from one in the OpenAI shape (ours, or a channel's
    refusal passed on): {"type": "error", "error": {"type", "message"}}."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError, RecursionError):
        error = None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "The upstream provider refused the request."
    kind = ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
