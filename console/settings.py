"""Settings for the console and the gateway, read from the environment.

The defaults run on a fresh machine with no services (SQLite, in-process cache, eager Celery,
console email). DATABASE_URL, REDIS_URL, SECRET_KEY, SITE_URL and the EMAIL_* variables switch
on the production parts; README.md lists them all.
"""

import ipaddress
import os
import warnings
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name, default=""):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name, default=()):
    value = os.environ.get(name)
    if not value:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# Everything signed or keyed derives from SECRET_KEY unless it has its own setting (below), so
# the site refuses to run in production on the key every copy of the code knows.
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-set-SECRET_KEY-in-production"  # noqa: S105
SECRET_KEY = env("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
if SECRET_KEY == DEVELOPMENT_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set it to a long random value of this installation's own, e.g. "
        "from: python -c 'import secrets; print(secrets.token_urlsafe(50))' (or run with "
        "DEBUG=1 for development)."
    )
# Rotation: the new key in SECRET_KEY, the old ones here until what they signed has expired.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
SITE_NAME = env("SITE_NAME", "Switchboard")
# In development, where `make run` serves: its HOST and PORT (a server listening on every
# interface is linked to by this machine's own address).
_dev_host = env("HOST", "127.0.0.1")
_dev_host = "127.0.0.1" if _dev_host in {"0.0.0.0", "::"} else _dev_host  # noqa: S104 (read)
_dev_host = f"[{_dev_host}]" if ":" in _dev_host else _dev_host
_default_site_url = (
    f"http://{_dev_host}:{env('PORT', '8000')}" if DEBUG else "http://127.0.0.1:8000"
)
SITE_URL = env("SITE_URL", _default_site_url).rstrip("/")
_site = urlsplit(SITE_URL)
SITE_IS_HTTPS = _site.scheme == "https"

# The site answers only to its own name (links are built from SITE_URL, never from the Host
# header); a load balancer's health check by address needs that address in ALLOWED_HOSTS.
ALLOWED_HOSTS = [
    _site.hostname,
    *(["localhost", "127.0.0.1", "[::1]"] if DEBUG else []),
    *env_list("ALLOWED_HOSTS"),
]
CSRF_TRUSTED_ORIGINS = [f"{_site.scheme}://{_site.netloc}", *env_list("CSRF_TRUSTED_ORIGINS")]

INSTALLED_APPS = [
    "accounts",
    "console",
    "billing",
    "tokens",
    "logs",
    "console.support",
    "console.announcements",
    "relay",
    "accounts.apps.StaffAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "accounts.apps.SignInEmailsConfig",  # allauth.account, named for the staff console
    "accounts.apps.SignInTwoFactorConfig",  # allauth.mfa, likewise
    "django_htmx",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "console.lib.staticfiles.StaticFilesMiddleware",  # WhiteNoise, streaming under ASGI
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "accounts.middleware.UserTimezoneMiddleware",
    # Pages that only show read the logs from DATABASE_REPLICA_URL's replica, when it is set.
    "console.lib.routers.replica_reads",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"
ASGI_APPLICATION = "console.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.site",
                "billing.context_processors.balance",
            ],
            "builtins": [
                "console.templatetags.console",
                "django.contrib.humanize.templatetags.humanize",
            ],
        },
    },
]

# Database: SQLite on a fresh machine, PostgreSQL in production (DATABASE_URL).
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
            conn_health_checks=True,
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {
                # One writer at a time: take the write lock when the transaction starts, wait for
                # it rather than fail, and let readers work beside the writer (WAL).
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory, so that the test servers' threads share the test database;
            # one per test run, so that two runs side by side do not trample each other.
            "TEST": {"NAME": str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3")},
        }
    }
# A read replica of DATABASE_URL's database (a PostgreSQL standby): the console's pages read
# request logs and usage rollups from it; all else, and every write, goes to the primary
# (console.lib.routers). The test suite runs without it; tests/console/test_replica.py makes one.
DATABASE_REPLICA_URL = env("DATABASE_REPLICA_URL")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = dj_database_url.parse(
        DATABASE_REPLICA_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
    DATABASE_ROUTERS = ["console.lib.routers.ReplicaRouter"]
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
# The covering indexes of the usage rollups are PostgreSQL's; SQLite builds them without their
# included columns, which is fine where SQLite is used.
SILENCED_SYSTEM_CHECKS = ["models.W040"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: cache, Celery broker, rate limits and the gateway's token invalidation. Every key and
# channel starts with REDIS_PREFIX, so that installations sharing a Redis server stay apart.
REDIS_URL = env("REDIS_URL")
REDIS_PREFIX = env("REDIS_PREFIX") or f"sb:{_site.netloc}"
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Without Redis, tasks run eagerly; the in-memory transport is named only because Celery opens
# a connection to the broker even then (a URL with a host, so that kombu does not complain).
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task whose worker died unacknowledged is handed to another worker after this long (checked
# every CELERY_RESTORE_SECONDS).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    "unacked_restore_interval": env_int("CELERY_RESTORE_SECONDS", 10),
    "unacked_restore_throttle": 1,
    "global_keyprefix": f"{REDIS_PREFIX}:",
}
CELERY_TIMEZONE = "UTC"
# How often the periodic jobs below run (log pruning: hourly), with beat or in process.
PERIODIC_JOB_SECONDS = float(env("PERIODIC_JOB_SECONDS", "60"))
CELERY_BEAT_SCHEDULE = {
    "reconcile-recharge-orders": {
        "task": "billing.tasks.reconcile_orders",
        "schedule": PERIODIC_JOB_SECONDS,
    },
    "apply-due-price-adjustments": {
        "task": "billing.tasks.apply_due_price_adjustments",
        "schedule": PERIODIC_JOB_SECONDS,
    },
    "retest-disabled-channels": {
        "task": "relay.tasks.retest_channels",
        "schedule": PERIODIC_JOB_SECONDS,
    },
    "release-abandoned-holds": {"task": "relay.tasks.reap_holds", "schedule": PERIODIC_JOB_SECONDS},
    "fold-pending-usage": {"task": "logs.tasks.fold_usage", "schedule": PERIODIC_JOB_SECONDS},
    "prune-old-logs": {"task": "logs.tasks.prune_logs", "schedule": 3600.0},
    "make-log-partitions": {"task": "logs.tasks.make_log_partitions", "schedule": 3600.0},
}
# Without a broker there is no beat: the web process runs the schedule itself (console.asgi).
PERIODIC_JOBS_IN_PROCESS = env_bool("PERIODIC_JOBS_IN_PROCESS", CELERY_TASK_ALWAYS_EAGER)

# Email: printed to the terminal unless a mail server is configured.
_email_host = env("EMAIL_HOST")
if _email_host:
    _email_port = env_int("EMAIL_PORT", 587)
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": _email_host,
                "port": _email_port,
                "username": env("EMAIL_HOST_USER"),
                "password": env("EMAIL_HOST_PASSWORD"),
                "use_tls": env_bool("EMAIL_USE_TLS", _email_port == 587),
                "use_ssl": env_bool("EMAIL_USE_SSL", _email_port == 465),
                "timeout": env_int("EMAIL_TIMEOUT", 20),
            },
        }
    }
else:
    MAILERS = {
        "default": {
            "BACKEND": env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
        }
    }
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", f"{SITE_NAME} <noreply@example.com>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
SUPPORT_EMAIL = env("SUPPORT_EMAIL", "support@example.com")

# Accounts.
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "console:dashboard"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_CHANGE_EMAIL = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = f"[{SITE_NAME}] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = _site.scheme
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_RATE_LIMITS = {
    # allauth's defaults, stated here so that they are visible and tunable in one place.
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "confirm_email": "1/3m/key",
    "change_password": "5/m/user",
}
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
# allauth's forms whose labels we write in sentence case, like the rest of the site.
ACCOUNT_FORMS = {
    "login": "accounts.forms.LoginForm",
    "change_password": "accounts.forms.ChangePasswordForm",
    "reset_password_from_key": "accounts.forms.ResetPasswordKeyForm",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = SITE_NAME
# Accept the codes of the neighbouring 30-second steps: phone clocks drift.
MFA_TOTP_TOLERANCE = 1
# Staff open the admin only after signing in with an authenticator code. Off only in development
# (DEBUG), where the demo's staff account has none.
STAFF_MFA_REQUIRED = env_bool("STAFF_MFA_REQUIRED", not DEBUG)

# Internationalisation: times are stored in UTC and shown in each user's time zone.
LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# Static files: WhiteNoise serves them, from the finders in development.
STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", DEBUG)
# Before collectstatic has run (development, tests), STATIC_ROOT does not exist yet.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")
WHITENOISE_AUTOREFRESH = DEBUG
# Uploaded files (ticket attachments): on local disk under MEDIA_ROOT, or, with MEDIA_S3_BUCKET,
# in a bucket of S3 or an S3-compatible store that every web server shares. Either way they are
# served only through the site, to their ticket's owner and staff: objects are private, stored
# under random names that are never reused, and no bucket address is ever handed out.
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_S3_BUCKET = env("MEDIA_S3_BUCKET")
if MEDIA_S3_BUCKET:
    # A bucket with ACLs switched off (AWS's default for new buckets) refuses any ACL but its
    # owner's: MEDIA_S3_ACL=none sends none, and the bucket's own policy keeps objects private.
    _media_acl = env("MEDIA_S3_ACL", "private").strip()
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": MEDIA_S3_BUCKET,
            "location": env("MEDIA_S3_PREFIX").strip("/"),
            "default_acl": None if _media_acl.lower() in {"", "none"} else _media_acl,
            "file_overwrite": False,
            # Only signed, short-lived addresses, should anything ever ask the storage for one.
            "querystring_auth": True,
            "querystring_expire": 300,
            # Without keys of its own, boto3's usual chain: AWS_* variables, an instance role.
            **{
                option: value
                for option, value in {
                    "endpoint_url": env("MEDIA_S3_ENDPOINT_URL"),
                    "region_name": env("MEDIA_S3_REGION"),
                    "access_key": env("MEDIA_S3_ACCESS_KEY_ID"),
                    "secret_key": env("MEDIA_S3_SECRET_ACCESS_KEY"),
                }.items()
                if value
            },
        },
    }

# Payments. The sandbox credits balances without money: development and demos only.
PAYMENTS_SANDBOX = env_bool("PAYMENTS_SANDBOX", DEBUG)
SANDBOX_PAYMENT_SECRET = env("SANDBOX_PAYMENT_SECRET")
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env("STRIPE_API_BASE")  # only to point tests at a local fake of Stripe
RECHARGE_MIN = env_int("RECHARGE_MIN_USD", 1) * 1_000_000
RECHARGE_MAX = env_int("RECHARGE_MAX_USD", 10_000) * 1_000_000
RECHARGE_PRESETS = [
    int(v) * 1_000_000 for v in env_list("RECHARGE_PRESETS_USD", [10, 20, 50, 100, 500])
]
RECHARGE_LATE_AFTER = timedelta(minutes=10)
RECHARGE_EXPIRE_AFTER = timedelta(hours=env_int("RECHARGE_EXPIRE_HOURS", 24))
# Payment callbacks that fail verification are recorded for staff up to this many an hour from
# one address, and this many from all addresses together; the rest are only logged.
WEBHOOK_REJECTS_RECORDED_PER_HOUR = (
    env_int("WEBHOOK_REJECTS_PER_SOURCE", 20),
    env_int("WEBHOOK_REJECTS_PER_PROVIDER", 200),
)
# Redemption code attempts per user, and the window they are counted in (seconds).
REDEEM_ATTEMPTS = (env_int("REDEEM_ATTEMPTS", 10), env_int("REDEEM_WINDOW_SECONDS", 600))

# Security headers. A strict policy: scripts and styles from this site only (plus a per-request
# nonce), no inline code. Chart data travels in json_script blocks, which are not executed.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    # Stripe Checkout is reached by a redirect after the recharge form, which form-action governs.
    "form-action": [CSP.SELF, *(["https://checkout.stripe.com"] if STRIPE_SECRET_KEY else [])],
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if SITE_IS_HTTPS:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading binds every subdomain of the operator's domain to HTTPS for good: their
        # decision (SECURE_HSTS_PRELOAD=1), not a default; check --deploy need not nag.
        SILENCED_SYSTEM_CHECKS.append("security.W021")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"level": env("DJANGO_LOG_LEVEL", "WARNING")},
        # Scanners asking by address or by other names get a 400; that is not an error of ours.
        "django.security.DisallowedHost": {"level": "CRITICAL"},
    },
}

# Product settings.
# The daily maintenance window, in the site's time zone (TIME_ZONE): start hour, end hour.
MAINTENANCE_START_HOUR = env_int("MAINTENANCE_START_HOUR", 1)
MAINTENANCE_END_HOUR = env_int("MAINTENANCE_END_HOUR", 5)
# Support tickets: attachments up to this size each, and new tickets per user per hour.
TICKET_ATTACHMENT_MAX_BYTES = env_int("TICKET_ATTACHMENT_MAX_MB", 5) * 1024 * 1024
TICKETS_PER_HOUR = env_int("TICKETS_PER_HOUR", 5)
TICKET_REPLIES_PER_HOUR = env_int("TICKET_REPLIES_PER_HOUR", 60)
# API keys: new or rotated keys per user per hour (each sends an email), and live tokens per user.
TOKENS_PER_HOUR = env_int("TOKENS_PER_HOUR", 20)
TOKENS_PER_USER = env_int("TOKENS_PER_USER", 200)
# Raw request logs are kept this many days; per-minute/hour/day usage rollups longer.
LOG_RETENTION_DAYS = env_int("LOG_RETENTION_DAYS", 90)
ROLLUP_RETENTION_DAYS = env_int("ROLLUP_RETENTION_DAYS", 730)
MINUTE_ROLLUP_RETENTION_DAYS = env_int("MINUTE_ROLLUP_RETENTION_DAYS", 35)
# API keys are stored as HMAC-SHA256 with this key; when unset, with one derived from
# SECRET_KEY (HMAC-SHA256 of it, salted "tokens.keys"). Rotation: the new key here, the old
# ones in TOKEN_HASH_KEY_FALLBACKS; an API key hashed under an old one (or under a key derived
# from SECRET_KEY or its fallbacks) still works, and is rehashed under the new key on its next
# use.
TOKEN_HASH_KEY = env("TOKEN_HASH_KEY")
TOKEN_HASH_KEY_FALLBACKS = env_list("TOKEN_HASH_KEY_FALLBACKS")
# Upstream channel keys are encrypted (Fernet) with a key derived from this, or from SECRET_KEY
# when unset. Rotation: the new secret here, the old ones in CHANNEL_KEY_SECRET_FALLBACKS (keys
# stay readable), then `manage.py rotate_channel_keys` re-encrypts every key under the new one.
CHANNEL_KEY_SECRET = env("CHANNEL_KEY_SECRET")
CHANNEL_KEY_SECRET_FALLBACKS = env_list("CHANNEL_KEY_SECRET_FALLBACKS")

# The gateway (/v1).
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_MB", 20) * 1024 * 1024
GATEWAY_MAX_TRIES = env_int("GATEWAY_MAX_TRIES", 3)
GATEWAY_FLUSH_SECONDS = float(env("GATEWAY_FLUSH_SECONDS", "1.0"))
# How often a busy gateway process adds its flushes' usage totals up into the rollups the charts
# and cards read (logs.writer.usage_fold; a quiet one folds each flush): they show requests up
# to this much (and a flush) late, and a busy key's rollup rows are updated once per fold rather
# than once per flush.
USAGE_FOLD_SECONDS = float(env("USAGE_FOLD_SECONDS", "5.0"))
# Every answered request is appended to a per-process journal here before its answer completes,
# so that a process that dies loses nothing; the next gateway process of the machine settles
# it. A local, persistent disk, shared by the machine's gateway processes. Switching it off
# (GATEWAY_JOURNAL=0) is only for measuring what it costs: `check --deploy` warns.
GATEWAY_JOURNAL = env_bool("GATEWAY_JOURNAL", True)
GATEWAY_JOURNAL_DIR = Path(env("GATEWAY_JOURNAL_DIR", str(BASE_DIR / "var" / "journal")))
# A token's refused requests (no money, unknown model, disabled, …) get log rows up to this many
# a minute per gateway process; the rest are counted in the usage rollups only.
GATEWAY_REFUSALS_LOGGED_PER_MINUTE = env_int("GATEWAY_REFUSALS_LOGGED_PER_MINUTE", 30)
# When a request sets no max_tokens, its completion is estimated at this many tokens to hold
# money for it; the real usage is what is charged.
GATEWAY_DEFAULT_MAX_TOKENS = env_int("GATEWAY_DEFAULT_MAX_TOKENS", 1024)
# Consecutive failures after which a channel is taken out of rotation until it recovers.
CHANNEL_FAILURE_THRESHOLD = env_int("CHANNEL_FAILURE_THRESHOLD", 5)
# The most one gateway process holds on one account at a time (micro-dollars).
LEASE_MAX = env_int("LEASE_MAX_USD", 5) * 1_000_000
HOLD_SECONDS = env_int("HOLD_SECONDS", 120)

# Metrics for Prometheus at /metrics (README, "Metrics"), for a scraper that sends
# `Authorization: Bearer <METRICS_TOKEN>` or comes from an address in METRICS_ALLOW (addresses
# and networks, e.g. 127.0.0.1,10.0.0.0/8), or both when both are set. With neither, there is
# no such page (404); in development (DEBUG) this machine may read it.
METRICS_TOKEN = env("METRICS_TOKEN")
METRICS_ALLOW = env_list("METRICS_ALLOW", ["127.0.0.1", "::1"] if DEBUG else [])
for _entry in METRICS_ALLOW:
    try:
        ipaddress.ip_network(_entry, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOW: {_entry!r} is not an address or a network; give them separated "
            "by commas, e.g. 127.0.0.1,10.0.0.0/8."
        ) from None
# Model names that get series of their own, per process; requests for any further ones are
# counted as "(other)". Celery queues whose length is read, besides the default queue and the
# queues of CELERY_TASK_ROUTES.
METRICS_MAX_MODELS = env_int("METRICS_MAX_MODELS", 100)
METRICS_CELERY_QUEUES = env_list("METRICS_CELERY_QUEUES")
