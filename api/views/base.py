"""What every /api/v1/ view shares: the envelope, strict query parameters, keyset pages,
throttles that also count failed logins, and owner scoping.

Use `ApiViewMixin` on any DRF view (`class MyView(ApiViewMixin, APIView)`), or the ready
`ApiView` / `ApiGenericViewSet` bases.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, viewsets
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from api.envelope import EnvelopeJSONRenderer, exception_handler
from api.pagination import QUERY_PARAMS as PAGE_PARAMS
from api.pagination import KeysetPagination
from api.permissions import owned
from api.throttling import AnonIPThrottle, TokenRateThrottle


class StrictContentNegotiation(DefaultContentNegotiation):
    """`?format=` that no renderer of the view offers is a 400 naming `format` (DRF: 404)."""

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        wanted = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        offered = [renderer.format for renderer in renderers]
        if wanted and wanted not in offered:
            raise exceptions.ValidationError({"format": [f"one of {', '.join(offered)}"]})
        return super().select_renderer(request, renderers, format_suffix)


class ApiViewMixin:
    """The envelope, strict parameters and limits of the API on a DRF view."""

    renderer_classes: list[type[BaseRenderer]] = [EnvelopeJSONRenderer]
    parser_classes = [JSONParser]
    content_negotiation_class = StrictContentNegotiation
    throttle_classes = [TokenRateThrottle, AnonIPThrottle]
    pagination_class = KeysetPagination
    # Query parameters every action accepts besides ?format=; list actions also take the
    # pagination's and their filterset's.
    query_params: tuple[str, ...] = ()
    list_query_params: tuple[str, ...] = ()

    def get_exception_handler(self) -> Any:
        return exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # DRF's order, except that throttles run before permissions, and also after a failed
        # login: anonymous requests and token guessing count against the client's IP.
        self.format_kwarg = self.get_format_suffix(**kwargs)  # type: ignore[attr-defined]
        neg = self.perform_content_negotiation(request)  # type: ignore[attr-defined]
        request.accepted_renderer, request.accepted_media_type = neg
        version, scheme = self.determine_version(request, *args, **kwargs)  # type: ignore[attr-defined]
        request.version, request.versioning_scheme = version, scheme
        try:
            self.perform_authentication(request)  # type: ignore[attr-defined]
        except exceptions.AuthenticationFailed:
            self.check_throttles(request)  # type: ignore[attr-defined]
            raise
        self.check_throttles(request)  # type: ignore[attr-defined]
        self.check_permissions(request)  # type: ignore[attr-defined]
        self.check_query_params(request)

    def is_list(self) -> bool:
        return getattr(self, "action", None) == "list"

    def declared_query_params(self) -> set[str]:
        """The query parameters this request may carry; anything else is a 400."""
        params = {self.settings.URL_FORMAT_OVERRIDE, *self.query_params}  # type: ignore[attr-defined]
        if self.is_list():
            params.update(self.list_query_params)
            if self.pagination_class is not None:
                params.update(PAGE_PARAMS)
            filterset = getattr(self, "filterset_class", None)
            if filterset is not None:
                params.update(filterset.base_filters)
        return params

    def check_query_params(self, request: Request) -> None:
        unknown = sorted(set(request.query_params) - self.declared_query_params())
        if unknown:
            raise exceptions.ValidationError(
                {name: ["unknown query parameter"] for name in unknown}
            )


class ApiView(ApiViewMixin, APIView):
    """A plain API view with the envelope."""


class OwnedViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """A viewset over `model_queryset()` restricted to the requesting user's rows."""

    owner_path = "owner"

    def model_queryset(self) -> Any:
        return self.queryset.all()  # type: ignore[union-attr]

    def get_queryset(self) -> Any:
        return owned(self.model_queryset(), self.request.user, self.owner_path)


class NotFoundView(ApiView):
    """Every path under /api/v1/ that no route matches: an enveloped 404 for any method."""

    permission_classes: list = []
    throttle_classes: list = []
    schema = None  # not an endpoint of the OpenAPI schema

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        raise exceptions.NotFound()
