"""Request limits of the API, counted in the shared cache (Redis db 0) across web processes.

A request with a token is counted per token (two scripts of one user do not starve each
other), a browser session per user, and an anonymous request per client IP. Rates come from
API_THROTTLE_USER_RATE and API_THROTTLE_ANON_RATE, read at each request so that a changed
setting (or a test) takes effect without a restart.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class TokenRateThrottle(SimpleRateThrottle):
    """API_THROTTLE_USER_RATE per token, or per user for a session."""

    scope = "api_user"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_USER_RATE

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        token_key = getattr(request.auth, "digest", None)
        ident = f"token:{token_key}" if token_key else f"user:{request.user.pk}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonIPThrottle(SimpleRateThrottle):
    """API_THROTTLE_ANON_RATE per client IP for requests without credentials."""

    scope = "api_anon"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_ANON_RATE

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
