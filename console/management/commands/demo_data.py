from decimal import Decimal

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from billing import services
from billing.models import BonusTier, LedgerEntry, Line, ModelPrice
from relay.models import Channel
from tokens.models import Token
from tokens.services import token_create, token_rotate

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "try-the-demo"  # noqa: S105 (printed for the demo on purpose)
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-console"  # noqa: S105
DEMO_CREDIT_REASON = "Demo balance"
DEMO_TOKEN = "Demo key"  # noqa: S105 (a token's name, not a secret)
SIMULATOR = "Simulator"

LINES = [
    ("default", "Open to everyone.", "1", False),
    ("vip", "Priority channels with more headroom.", "1.5", False),
    ("training", "Large batch and training-data workloads. Needs a grant.", "0.6", True),
]
# model, vendor, model multiplier, completion multiplier, per-call price in micro-dollars, and
# the cache read multiplier where the model's differs from its vendor's (VENDOR_CACHE_RATES)
MODELS = [
    ("gpt-4o-mini", "OpenAI", "0.075", "4", None, None),
    ("gpt-4o", "OpenAI", "1.25", "4", None, None),
    ("gpt-4.1", "OpenAI", "1", "4", None, "0.25"),
    ("o3-mini", "OpenAI", "0.55", "4", None, None),
    ("claude-sonnet-4", "Anthropic", "1.5", "5", None, None),
    ("claude-3-5-haiku", "Anthropic", "0.4", "5", None, None),
    ("gemini-2.0-flash", "Google", "0.05", "4", None, None),
    ("deepseek-chat", "DeepSeek", "0.135", "4", None, None),
    ("text-embedding-3-small", "OpenAI", "0.01", "1", None, "1"),
    ("dall-e-3", "OpenAI", "1", "1", 40_000, "1"),
]
# Audio priced apart: input and output multipliers relative to text (OpenAI's audio preview:
# $40 / $80 per million audio tokens against $2.50 / $10 for text).
AUDIO = {"gpt-4o": ("16", "8")}
# The simulated channels: one per vendor protocol, each serving its vendor's models natively.
SIMULATORS = [
    (SIMULATOR, "openai", ("OpenAI", "DeepSeek")),
    (f"{SIMULATOR} (Anthropic)", "anthropic", ("Anthropic",)),
    (f"{SIMULATOR} (Gemini)", "gemini", ("Google",)),
]
TIERS = [(500, "5"), (2_000, "8"), (10_000, "10")]


class Command(BaseCommand):
    help = "Loads demo users, lines, prices and bonus tiers. Safe to run again: nothing doubles."

    def handle(self, *args, **options):
        with transaction.atomic():
            demo, demo_new = _user(DEMO_EMAIL, DEMO_PASSWORD, name="Demo User")
            _admin, admin_new = _user(ADMIN_EMAIL, ADMIN_PASSWORD, name="Staff", staff=True)
            _prices()
            _simulator()
            if not LedgerEntry.objects.filter(
                account__user=demo, reason=DEMO_CREDIT_REASON
            ).exists():
                services.balance_credit(
                    user=demo,
                    amount=20_000_000,
                    kind=LedgerEntry.Kind.ADJUSTMENT,
                    reason=DEMO_CREDIT_REASON,
                    note=DEMO_CREDIT_REASON,
                )
            key = _demo_key(demo)
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(f"{settings.SITE_NAME} demo is ready at {settings.SITE_URL}")
        )
        self.stdout.write(f"  Demo login:  {DEMO_EMAIL} / {DEMO_PASSWORD}{_note(demo_new)}")
        self.stdout.write(
            f"  Admin login: {ADMIN_EMAIL} / {ADMIN_PASSWORD}{_note(admin_new)}"
            f"  ({settings.SITE_URL}/admin/)"
        )
        self.stdout.write("")
        self.stdout.write("  Try the API (the simulator answers; a new demo key at every start):")
        self.stdout.write(
            f"  curl {settings.SITE_URL}/v1/chat/completions -H 'Authorization: Bearer {key}' "
            "-H 'Content-Type: application/json' "
            """-d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}'"""
        )
        self.stdout.write("")


def _user(email, password, *, name, staff=False):
    user, created = User.objects.get_or_create(
        email=email, defaults={"name": name, "is_staff": staff, "is_superuser": staff}
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
    EmailAddress.objects.update_or_create(
        user=user, email=email, defaults={"verified": True, "primary": True}
    )
    return user, created


def _prices():
    for position, (name, description, multiplier, needs_grant) in enumerate(LINES):
        Line.objects.get_or_create(
            name=name,
            defaults={
                "description": description,
                "multiplier": Decimal(multiplier),
                "requires_grant": needs_grant,
                "position": position,
            },
        )
    for model, vendor, multiplier, completion, per_call, cache_read in MODELS:
        kind = ModelPrice.Kind.CHAT
        if "embedding" in model:
            kind = ModelPrice.Kind.EMBEDDING
        elif per_call:
            kind = ModelPrice.Kind.IMAGE
        rates = ModelPrice.vendor_cache_rates(vendor)
        if cache_read is not None:
            rates["cache_read_multiplier"] = Decimal(cache_read)
        audio_input, audio_output = AUDIO.get(model, ("1", "1"))
        ModelPrice.objects.get_or_create(
            model=model,
            defaults={
                "vendor": vendor,
                "kind": kind,
                "model_multiplier": Decimal(multiplier),
                "completion_multiplier": Decimal(completion),
                "pricing": ModelPrice.Pricing.PER_CALL if per_call else ModelPrice.Pricing.TOKENS,
                "call_price": per_call or 0,
                "audio_input_multiplier": Decimal(audio_input),
                "audio_output_multiplier": Decimal(audio_output),
                **rates,
            },
        )
    for dollars, percent in TIERS:
        BonusTier.objects.get_or_create(
            threshold=dollars * 1_000_000, defaults={"percent": Decimal(percent)}
        )


def _simulator():
    for position, (name, dialect, vendors) in enumerate(SIMULATORS):
        channel, created = Channel.objects.get_or_create(
            name=name,
            defaults={
                "type": Channel.Type.SIMULATOR,
                "model_names": [model for model, vendor, *_rest in MODELS if vendor in vendors],
                # The vendors' own simulators first, should an older demo's serve theirs too.
                "priority": 1 if position else 0,
                "weight": 10,
                "simulator": {
                    "latency_ms": 300,
                    "error_rate": 0.0,
                    "completion_tokens": 24,
                    "dialect": dialect,
                    # Small, so that a short conversation's second turn already shows a cache.
                    "cache_min_tokens": 64,
                },
            },
        )
        if created:
            channel.lines.set(Line.objects.all())


def _demo_key(demo):
    """A fresh key for the demo token: keys are shown once, so each start rotates it."""
    token = Token.objects.alive().filter(user=demo, name=DEMO_TOKEN).first()
    if token is None:
        _token, key = token_create(
            user=demo, name=DEMO_TOKEN, line=Line.objects.get(name="default"), notify=False
        )
        return key
    return token_rotate(token=token, notify=False)


def _note(created):
    return "" if created else " (unless you changed it)"
