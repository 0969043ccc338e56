"""GET /me: who the request is authenticated as. Answered from the authenticated user alone
(no query of its own): the API's cheapest authenticated answer, and bench/api.py's baseline
for what authentication, throttling and the envelope cost every request."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.views.base import ApiView


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_staff = serializers.BooleanField(help_text="staff see every owner's data")


class MeView(ApiView):
    @extend_schema(responses={200: MeSerializer}, operation_id="me")
    def get(self, request: Request) -> Response:
        user = request.user
        return Response(MeSerializer(user).data)
