"""GET/POST /tokens, DELETE /tokens/{id}: the requester's API tokens."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from knox.models import AuthToken
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from api.auth import create_token
from api.models import TokenDetails
from api.serializers.tokens import NewTokenSerializer, TokenCreateSerializer, TokenSerializer
from api.views.base import OwnedViewSet


class TokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, OwnedViewSet
):
    """API tokens (`Authorization: Bearer <token>`). The token is in the creation's answer
    only; the server keeps its SHA-512 hash. Deleting one revokes it at once."""

    queryset = TokenDetails.objects.select_related("token")
    serializer_class = TokenSerializer
    owner_path = "token__user"

    @extend_schema(request=TokenCreateSerializer, responses={201: NewTokenSerializer})
    def create(self, request: Request) -> Response:
        given = TokenCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        instance, token = create_token(
            request.user, given.validated_data["name"], given.validated_data["expiry_hours"]
        )
        details = TokenDetails.objects.select_related("token").get(token=instance)
        answer = NewTokenSerializer(details, context={"token": token})
        return Response(answer.data, status=status.HTTP_201_CREATED)

    def get_queryset(self) -> Any:
        # An expired token works nowhere (and is deleted when presented): not listed either.
        live = Q(token__expiry__isnull=True) | Q(token__expiry__gt=timezone.now())
        return super().get_queryset().filter(live)

    def perform_destroy(self, instance: TokenDetails) -> None:
        AuthToken.objects.filter(pk=instance.token_id).delete()  # the details go with it

    def get_serializer_class(self) -> Any:
        return TokenCreateSerializer if self.action == "create" else TokenSerializer
