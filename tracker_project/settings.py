"""Settings for the tracker fleet service: one file, every value from the environment.

Values come from the process environment, or from a `.env` file at the repository root
(created by `scripts/bootstrap`). A missing or malformed value stops the process at start
with an `ImproperlyConfigured` naming the variable. The README lists every variable.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# DJANGO_ENV_FILE names another file, or "none" to read the environment only.
ENV_FILE = environ.Env().str("DJANGO_ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE != "none" and Path(ENV_FILE).is_file():
    # Real environment variables win over the file (overwrite=False).
    environ.Env.read_env(ENV_FILE, overwrite=False)


def _typed(name: str, cast: type, default: object = environ.Env.NOTSET) -> object:
    """Read a variable through django-environ, naming it when its value is malformed."""
    try:
        return env.get_value(name, cast=cast, default=default)
    except ImproperlyConfigured:
        raise
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name} has an invalid value: {exc}") from None


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    value = _typed(name, int, default)
    if value < minimum:  # type: ignore[operator]
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value  # type: ignore[return-value]


def env_bool(name: str, default: bool) -> bool:
    raw = env.str(name, default=str(default)).strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def _fernet_keys(raw: str) -> list[str]:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is empty")
    for key in keys:
        try:
            if len(base64.urlsafe_b64decode(key.encode())) != 32:
                raise ValueError
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEY must be one or more comma-separated Fernet keys "
                "(32 url-safe base64-encoded bytes each)"
            ) from None
    return keys


def _throttle_rate(name: str, default: str) -> str:
    """A DRF throttle rate, "<requests>/<period>" with period s, min, hour or day."""
    value = env.str(name, default=default).strip()
    count, _, period = value.partition("/")
    periods = {"s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"}
    if not (count.isdigit() and int(count) > 0 and period in periods):
        raise ImproperlyConfigured(
            f"{name} must look like 30/min (periods: s, min, hour, day), got {value!r}"
        )
    return value


def _redis_db_url(url: str, db: int) -> str:
    """The same Redis server, another logical database (cache 0, tasks 1, health 2, ...)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


# --- core -------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY")
if not SECRET_KEY.strip():
    raise ImproperlyConfigured("SECRET_KEY is empty")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
FIELD_ENCRYPTION_KEYS = _fernet_keys(env.str("FIELD_ENCRYPTION_KEY"))

INSTALLED_APPS = [
    # Django's admin with the fleet's admin site (the operator dashboard's pages).
    "monitoring.admin_site.FleetAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.gis",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as static files, no CDN
    "django_q",
    "trackers",
    "locations",
    "geofences",
    "monitoring",
    "findmy_sim",
    "api",
    "leaflet",  # django-leaflet: Leaflet's own static files for the owners' map
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it may run the view a second time (on the primary, when a replica fails under it).
    "tracker_project.replicas.ReplicaMiddleware",
]

ROOT_URLCONF = "tracker_project.urls"
WSGI_APPLICATION = "tracker_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL")}
if DATABASES["default"]["ENGINE"] != "django.contrib.gis.db.backends.postgis":
    raise ImproperlyConfigured("DATABASE_URL must use the postgis:// scheme (PostgreSQL + PostGIS)")
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Test runs create their own database; several runs on one server need different names.
if test_database_name := env.str("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": test_database_name}


# Read replicas (tracker_project/replicas.py): DATABASE_REPLICA_URL is a comma-separated list
# of postgis:// URLs (percent-encode a comma in a password), aliases replica1, replica2, ...
# Read-only API requests read from a usable one; everything else uses the primary.
def _replica_databases(primary: dict) -> dict[str, dict]:
    urls = [u.strip() for u in env.str("DATABASE_REPLICA_URL", default="").split(",")]
    replicas = {}
    for number, url in enumerate((u for u in urls if u), start=1):
        config = environ.Env.db_url_config(url)
        if config.get("ENGINE") != "django.contrib.gis.db.backends.postgis" or not (
            config.get("HOST") and config.get("NAME")
        ):
            raise ImproperlyConfigured(
                f"DATABASE_REPLICA_URL: entry {number} must be a postgis://user:password@host"
                ":port/name URL"
            )
        # A streaming replica holds the primary's databases, under the same names.
        if config["NAME"] != primary["NAME"] or (config["HOST"], str(config["PORT"])) == (
            primary["HOST"],
            str(primary["PORT"]),
        ):
            raise ImproperlyConfigured(
                f"DATABASE_REPLICA_URL: entry {number} must name the database of DATABASE_URL "
                f"({primary['NAME']}) on another server"
            )
        config["CONN_MAX_AGE"] = primary["CONN_MAX_AGE"]
        config["CONN_HEALTH_CHECKS"] = True
        # A replica that is down must not hold a request for long (the URL may say otherwise).
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
        # Test runs create nothing on a replica: Django gives the alias the test database's
        # name (a streaming replica has it as soon as the primary does) and leaves it alone.
        config["TEST"] = {"MIRROR": "default"}
        replicas[f"replica{number}"] = config
    return replicas


DATABASES.update(_replica_databases(DATABASES["default"]))
DATABASE_REPLICAS = [alias for alias in DATABASES if alias != "default"]
DATABASE_ROUTERS = ["tracker_project.replicas.ReplicaRouter"]
# A replica further behind the primary than this is skipped until it catches up.
REPLICA_MAX_LAG_SECONDS = env_int("REPLICA_MAX_LAG_SECONDS", 10)
# After an unsafe request, its user reads from the primary for this long (0: never).
REPLICA_STICKY_SECONDS = env_int("REPLICA_STICKY_SECONDS", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# gis.W001: GDAL < 3.9 cannot block file/network access while parsing spatial references.
# Debian 12 ships 3.6; the service never hands GDAL a file or SRS from a user (geometries
# arrive as coordinates), so the risk the check names does not apply here.
SILENCED_SYSTEM_CHECKS = ["gis.W001"]

# --- redis & cache ----------------------------------------------------------------------
# One Redis server, split by purpose into logical databases so that flushing the cache never
# touches heartbeats. Without REDIS_URL the service still runs: local-memory cache, and
# heartbeats recorded in the database only.
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL and urlsplit(REDIS_URL).scheme not in {"redis", "rediss"}:
    raise ImproperlyConfigured("REDIS_URL must start with redis:// or rediss://")
REDIS_HEALTH_URL = _redis_db_url(REDIS_URL, 2) if REDIS_URL else ""
REDIS_NOTIFICATIONS_URL = _redis_db_url(REDIS_URL, 3) if REDIS_URL else ""
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": _redis_db_url(REDIS_URL, 0),
            "OPTIONS": {
                # A Redis outage degrades to cache misses instead of failing requests.
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- auth, i18n, static -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Owners log in to the map at /accounts/login/ (operators use the admin's login).
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/map/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- security (production values come from the environment; see README) ----------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
# Behind a TLS-terminating proxy (nginx, a load balancer) that sets X-Forwarded-Proto.
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# /health, /health/live, /status/* and /metrics are probed over plain HTTP from inside the
# network.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^health/live$", r"^status/", r"^metrics$"]

# --- REST framework ---------------------------------------------------------------------
# Requests per user to the control endpoints (POST /fetch/*, /queue/*): "N/s|min|hour|day".
CONTROL_THROTTLE_RATE = _throttle_rate("CONTROL_THROTTLE_RATE", "30/min")
# Requests to /api/v1/ per token (per user for a browser session), and per client IP without
# credentials (failed logins included): "N/s|min|hour|day", counted in the shared cache.
API_THROTTLE_USER_RATE = _throttle_rate("API_THROTTLE_USER_RATE", "600/min")
API_THROTTLE_ANON_RATE = _throttle_rate("API_THROTTLE_ANON_RATE", "60/min")
# Location searches: the longest starts_at..ends_at range in days, and how long a JSON page
# stays in the search cache (Redis db 0; 0: no cache). New reports invalidate it sooner.
API_MAX_RANGE_DAYS = env_int("API_MAX_RANGE_DAYS", 366, minimum=1)
API_SEARCH_CACHE_SECONDS = env_int("API_SEARCH_CACHE_SECONDS", 300)
REST_FRAMEWORK = {
    # No HTTP Basic: browsers never get a password prompt. Scripts send a knox token
    # (`Authorization: Bearer ...`, only its hash is stored); browsers use the admin's session,
    # whose unsafe requests DRF refuses without a CSRF token. The token class comes first: its
    # WWW-Authenticate ("Bearer") turns a missing login into a 401 rather than a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.auth.TokenAuthentication",  # knox's, plus the token's last use
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only: an error page (or the browsable API's forms) never renders as HTML.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "monitoring.api.exceptions.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"control": CONTROL_THROTTLE_RATE},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
# knox's own token table; the API keeps each token's name and last use beside it
# (api.models.TokenDetails). Named here because the API's migration refers to it.
KNOX_TOKEN_MODEL = "knox.AuthToken"  # noqa: S105 (a model name, not a secret)
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Bearer",
    "TOKEN_TTL": None,  # create_api_token sets each token's expiry
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tracker fleet API",
    "DESCRIPTION": "Find My tracker fleet: trackers, location reports, fetch control, health.",
    "VERSION": "1.0.0",
    # The schema maps the control surface: staff only, like the admin.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/v1/ answers are wrapped in {"data", "error"}; the schema says so (api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.envelope_hook",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "geofences.models.Channel",
        "EventKindEnum": "geofences.models.EventKind",
        "FenceKindEnum": "geofences.models.FenceKind",
        "TrackerKindEnum": "trackers.models.TrackerKind",
        "DeliveryStatusEnum": "geofences.models.DeliveryStatus",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- fetching (see README, "Configuration") ---------------------------------------------
FETCH_INTERVAL = env_int("FETCH_INTERVAL", 3600)  # seconds a tracker rests after a fetch
MAX_KEYS_PER_BATCH = env_int("MAX_KEYS_PER_BATCH", 64, minimum=1)
if MAX_KEYS_PER_BATCH > 64:
    # Apple answers larger requests with partial data (findmy issue tracker).
    raise ImproperlyConfigured("MAX_KEYS_PER_BATCH must be at most 64")
PROCESSING_TIMEOUT = env_int("PROCESSING_TIMEOUT", 300, minimum=10)  # lease length, seconds
ACCOUNT_MIN_REQUEST_INTERVAL = env_int("ACCOUNT_MIN_REQUEST_INTERVAL", 300)
FETCH_CYCLE_HOURS = env_int("FETCH_CYCLE_HOURS", 12, minimum=1)
FETCH_RETRIES = env_int("FETCH_RETRIES", 3, minimum=1)  # attempts per request, transient faults
FETCH_RETRY_MAX_WAIT = env_int("FETCH_RETRY_MAX_WAIT", 30, minimum=0)  # seconds
BREAKER_FAILURE_THRESHOLD = env_int("BREAKER_FAILURE_THRESHOLD", 3, minimum=1)
BREAKER_COOLDOWN = env_int("BREAKER_COOLDOWN", 600, minimum=1)  # seconds the circuit stays open
QUARANTINE_AFTER = env_int("QUARANTINE_AFTER", 5, minimum=1)  # failed fetches of one tracker
WORKER_IDLE_SLEEP = env_int("WORKER_IDLE_SLEEP", 5, minimum=1)  # seconds between empty claims
HEARTBEAT_INTERVAL = env_int("HEARTBEAT_INTERVAL", 60, minimum=1)
# FetchAttempt rows (the audit log) older than this are pruned daily; /metrics keeps counting.
FETCH_ATTEMPT_RETENTION_DAYS = env_int("FETCH_ATTEMPT_RETENTION_DAYS", 30, minimum=1)
FETCH_REPORT_DAYS = 7  # what Apple keeps, and what findmy asks for
# Hosts (besides loopback) an account's fetch and anisette endpoints may name. Every endpoint
# must be https:// unless its host is loopback or listed here; the check runs when an account
# is added and again before every request (an account's tokens go to that host).
FINDMY_ALLOWED_ENDPOINT_HOSTS = [
    h.strip().lower() for h in env.list("FINDMY_ALLOWED_ENDPOINT_HOSTS", default=[]) if h.strip()
]
# A report stamped more than this many seconds in the future (a finder's clock) is refused.
REPORT_CLOCK_TOLERANCE_SECONDS = env_int("REPORT_CLOCK_TOLERANCE_SECONDS", 300)
# Seconds an idle or failing worker waits before its next claim after an unexpected error.
# Store batch n in a background thread while batch n+1 is fetched and decrypted (needs a
# spare core for PostgreSQL; turn off when every core runs a worker).
FETCH_PIPELINE = env_bool("FETCH_PIPELINE", True)
WORKER_ERROR_BACKOFF = env_int("WORKER_ERROR_BACKOFF", 5, minimum=1)
# Service instances whose last heartbeat is older than this are deleted (daily schedule).
SERVICE_INSTANCE_RETENTION_HOURS = env_int("SERVICE_INSTANCE_RETENTION_HOURS", 24, minimum=1)

# --- processing: geofences, events (see README, "Configuration") -----------------------
GEOFENCE_CONFIRMATIONS = env_int("GEOFENCE_CONFIRMATIONS", 2, minimum=1)
GEOFENCE_MIN_DWELL_SECONDS = env_int("GEOFENCE_MIN_DWELL_SECONDS", 0)
GEOFENCE_EXIT_MARGIN_M = env_int("GEOFENCE_EXIT_MARGIN_M", 0)
GEOFENCE_MAX_RADIUS_M = env_int("GEOFENCE_MAX_RADIUS_M", 500_000, minimum=1)
GEOFENCE_MAX_AREA_KM2 = env_int("GEOFENCE_MAX_AREA_KM2", 1_000_000, minimum=1)
TRACKER_SILENT_HOURS = env_int("TRACKER_SILENT_HOURS", 24, minimum=1)
PROCESS_BATCH_TRACKERS = env_int("PROCESS_BATCH_TRACKERS", 200, minimum=1)
PROCESS_IDLE_SLEEP = env_int("PROCESS_IDLE_SLEEP", 1, minimum=1)  # seconds between empty polls


# --- processing: reverse geocoding (see README, "Geocoding") ----------------------------
# GEOCODER: "nominatim" (needs GEOCODER_USER_AGENT, checked when a geocoder starts, so that
# `check` and the tests never need one), "offline" (city level from GeoNames data, no
# network), or any geopy service name with a reverse(); GEOCODER_OPTIONS (a JSON object) goes
# to the geopy class, e.g. {"domain": "127.0.0.1:8080", "scheme": "http"} for a self-hosted
# Nominatim.
def _geocoder(name: str, default: str) -> str:
    value = env.str(name, default=default).strip().lower()
    if value == "offline":
        return value
    from geopy.exc import GeocoderNotFound
    from geopy.geocoders import get_geocoder_for_service

    try:
        service = get_geocoder_for_service(value)
    except GeocoderNotFound:
        raise ImproperlyConfigured(
            f"{name} must be offline or a geopy service name (nominatim, ...), got {value!r}"
        ) from None
    if not hasattr(service, "reverse"):
        raise ImproperlyConfigured(f"{name}: geopy's {value!r} has no reverse geocoding")
    return value


def _json_object(name: str) -> dict:
    raw = env.str(name, default="").strip() or "{}"
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object, got {raw!r}")
    return value


def _env_float(name: str, default: float, *, minimum: float, exclusive: bool = False) -> float:
    value: float = _typed(name, float, default)  # type: ignore[assignment]
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        raise ImproperlyConfigured(
            f"{name} must be {'>' if exclusive else '>='} {minimum}, got {value}"
        )
    return value


def _utc_window(name: str, default: str) -> str:
    """A daily window "HH:MM-HH:MM" in UTC: may wrap midnight, end at 24:00; not empty."""
    value = env.str(name, default=default).strip()
    match = re.fullmatch(r"([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)", value)
    start, end = (
        (int(match[1]) * 60 + int(match[2]), int(match[3]) * 60 + int(match[4]))
        if match
        else (0, 0)
    )
    if start == end or start >= 24 * 60 or end > 24 * 60:
        raise ImproperlyConfigured(
            f"{name} must look like 19:00-07:00 (UTC, may wrap midnight, not empty), got {value!r}"
        )
    return value


GEOCODER = _geocoder("GEOCODER", "nominatim")
GEOCODER_USER_AGENT = env.str("GEOCODER_USER_AGENT", default="").strip()
GEOCODER_OPTIONS = _json_object("GEOCODER_OPTIONS")
# Summed over every process of the deployment (Nominatim's policy: at most 1 per second).
GEOCODE_RATE_PER_SECOND = _env_float("GEOCODE_RATE_PER_SECOND", 1.0, minimum=0, exclusive=True)
GEOCODE_CELL_METERS = env_int("GEOCODE_CELL_METERS", 25, minimum=1)  # the cache's cell size
# The offline (town-level) provider's cells: its answer changes every few kilometres.
GEOCODE_OFFLINE_CELL_METERS = env_int("GEOCODE_OFFLINE_CELL_METERS", 1000, minimum=1)
GEOCODE_REUSE_METERS = env_int("GEOCODE_REUSE_METERS", 50)  # 0: never reuse a nearby address
GEOCODE_BACKFILL_WINDOW = _utc_window("GEOCODE_BACKFILL_WINDOW", "19:00-07:00")
GEOCODE_BACKFILL_BATCH = env_int("GEOCODE_BACKFILL_BATCH", 100, minimum=1)  # reports per batch
GEOCODE_BACKFILL_PAUSE = _env_float("GEOCODE_BACKFILL_PAUSE", 1.0, minimum=0)  # s between them
GEOCODE_MAX_ATTEMPTS = env_int("GEOCODE_MAX_ATTEMPTS", 5, minimum=1)  # lookups of one cell
GEOCODE_TIMEOUT = _env_float("GEOCODE_TIMEOUT", 10.0, minimum=0, exclusive=True)  # s per request
GEOCODE_BREAKER_THRESHOLD = env_int("GEOCODE_BREAKER_THRESHOLD", 5, minimum=1)
GEOCODE_BREAKER_COOLDOWN = env_int("GEOCODE_BREAKER_COOLDOWN", 300, minimum=1)  # s, doubling

# --- alerts: deliveries by webhook, email and Redis (see README, "Alerts") --------------
ALERT_MAX_ATTEMPTS = env_int("ALERT_MAX_ATTEMPTS", 8, minimum=1)  # then the delivery fails
# Retry n waits a uniformly random time in 0 .. min(MAX, BASE * 2^(n-1)) seconds.
ALERT_RETRY_BASE_SECONDS = env_int("ALERT_RETRY_BASE_SECONDS", 30, minimum=1)
ALERT_RETRY_MAX_SECONDS = env_int("ALERT_RETRY_MAX_SECONDS", 3600, minimum=1)
if ALERT_RETRY_MAX_SECONDS < ALERT_RETRY_BASE_SECONDS:
    raise ImproperlyConfigured("ALERT_RETRY_MAX_SECONDS must be >= ALERT_RETRY_BASE_SECONDS")
ALERT_WEBHOOK_TIMEOUT = env_int("ALERT_WEBHOOK_TIMEOUT", 10, minimum=1)  # seconds per request
if ALERT_WEBHOOK_TIMEOUT > 60:
    raise ImproperlyConfigured("ALERT_WEBHOOK_TIMEOUT must be at most 60 (seconds)")
ALERT_BATCH_SIZE = env_int("ALERT_BATCH_SIZE", 20, minimum=1)  # deliveries per claim
# Webhook hosts allowed to resolve to loopback or private addresses (refused otherwise).
ALERT_WEBHOOK_ALLOWED_HOSTS = [
    h.strip().lower() for h in env.list("ALERT_WEBHOOK_ALLOWED_HOSTS", default=[]) if h.strip()
]
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
if "." not in EMAIL_BACKEND or any(c.isspace() for c in EMAIL_BACKEND):
    raise ImproperlyConfigured(
        "EMAIL_BACKEND must be a dotted path such as django.core.mail.backends.smtp.EmailBackend"
    )
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="tracker-fleet@localhost")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # implicit TLS, usually port 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: set one")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)  # seconds; Django's default is none

# --- latest-location view and business health (see README, "Configuration") -------------
# The view is refreshed every minute; /health refreshes it when older than this.
LATEST_VIEW_MAX_AGE_SECONDS = env_int("LATEST_VIEW_MAX_AGE_SECONDS", 300, minimum=1)
# /health: the oldest report waiting for processing (by fetched_at) degrades past WARN and
# fails past FAIL (alerts are that late).
PROCESSING_BACKLOG_WARN_SECONDS = env_int("PROCESSING_BACKLOG_WARN_SECONDS", 300, minimum=1)
PROCESSING_BACKLOG_FAIL_SECONDS = env_int("PROCESSING_BACKLOG_FAIL_SECONDS", 3600, minimum=1)
if PROCESSING_BACKLOG_FAIL_SECONDS < PROCESSING_BACKLOG_WARN_SECONDS:
    raise ImproperlyConfigured(
        "PROCESSING_BACKLOG_FAIL_SECONDS must be >= PROCESSING_BACKLOG_WARN_SECONDS"
    )
# /health and /metrics count trackers (of owners with active fences) without a geofence
# event for this many days.
GEOFENCE_EVENT_QUIET_DAYS = env_int("GEOFENCE_EVENT_QUIET_DAYS", 7, minimum=1)

# --- pages: the operator dashboard and the owners' map (see README, "Configuration") -----
# Seconds between two refreshes of the dashboard's figures (each runs the /health checks).
DASHBOARD_REFRESH_SECONDS = env_int("DASHBOARD_REFRESH_SECONDS", 15, minimum=2)
# Seconds between two reloads of the latest positions on the map.
MAP_REFRESH_SECONDS = env_int("MAP_REFRESH_SECONDS", 30, minimum=2)
# The map's background tiles ({z}/{x}/{y}, optionally {s}); empty: no tile layer (the
# positions, tracks and fences still show, on a blank background).
MAP_TILE_URL = env.str("MAP_TILE_URL", default="https://tile.openstreetmap.org/{z}/{x}/{y}.png")
if MAP_TILE_URL and not re.match(r"^(https?:)?//\S+$", MAP_TILE_URL):
    raise ImproperlyConfigured(f"MAP_TILE_URL must be an http(s) URL or empty: {MAP_TILE_URL!r}")
MAP_TILE_ATTRIBUTION = env.str(
    "MAP_TILE_ATTRIBUTION",
    default='&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> '
    "contributors",
)

# --- django-q2 --------------------------------------------------------------------------
Q_CLUSTER = {
    "name": "trackerfleet",
    "orm": "default",  # the ORM broker: PostgreSQL is the only queue we need
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": PROCESSING_TIMEOUT,
    "retry": PROCESSING_TIMEOUT + 60,
    "catch_up": False,  # a stopped cluster must not replay every missed minute at start
    "max_attempts": 1,
    "save_limit": 500,
    "poll": 1,
    "label": "Task queue",
}

# --- logging ----------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured("LOG_FORMAT must be json or text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # findmy logs every anisette fetch and login transition at INFO.
        "findmy": {"level": "WARNING"},
        "django.db.backends": {"level": "WARNING"},
    },
}
