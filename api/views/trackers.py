"""GET/POST /trackers, GET/PATCH /trackers/{id}."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from api.serializers.trackers import (
    ImportedSerializer,
    TrackerImportSerializer,
    TrackerSerializer,
)
from api.views.base import OwnedViewSet
from geofences.models import Geofence
from trackers.keyfiles import parse_key_file, store_entries
from trackers.models import Tracker


class TrackerViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, OwnedViewSet
):
    """The requester's trackers (staff: all). PATCH sets `name`, `is_active` and the fences
    that name the tracker (`geofences`, ids of the owner's fences). POST imports a key file."""

    queryset = (
        Tracker.objects.defer("key_material")
        .select_related("production_run")
        .prefetch_related(Prefetch("geofences", Geofence.objects.only("id")))
    )
    serializer_class = TrackerSerializer
    parser_classes = [JSONParser, MultiPartParser]
    http_method_names = ["get", "post", "patch", "head", "options"]
    pagination_key = "id"

    @extend_schema(
        request={"multipart/form-data": TrackerImportSerializer},
        responses={201: ImportedSerializer},
        description="Import a key file as `import_trackers` does: findmy JSON or CSV "
        "`name,private_key`. All or nothing: any invalid entry is a 400 listing them all "
        "(`fields.file`) and nothing is imported. Keys already known are skipped.",
    )
    def create(self, request: Request) -> Response:
        given = TrackerImportSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        upload = given.validated_data["file"]
        text = self._text(upload.read())
        fmt = given.validated_data["format"]
        filename = upload.name if fmt == "auto" else f"upload.{fmt}"
        entries, problems = parse_key_file(text, filename or "")
        if problems:
            raise serializers.ValidationError({"file": [str(p) for p in problems]})
        result = store_entries(
            entries,
            owner=request.user,
            production_run=given.validated_data.get("production_run"),
        )
        created = {
            t.hashed_adv_key: t
            for t in Tracker.objects.filter(
                owner=request.user, hashed_adv_key__in=[e.hashed_adv_key for e in result.created]
            ).only("id", "name", "hashed_adv_key")
        }
        answer = {
            "created": [
                {"id": created[e.hashed_adv_key].pk, "name": e.name, "where": e.where}
                for e in result.created
                if e.hashed_adv_key in created
            ],
            "skipped": [
                {"name": e.name, "where": e.where, "reason": "already known"} for e in result.known
            ],
        }
        return Response(answer, status=status.HTTP_201_CREATED)

    @staticmethod
    def _text(data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise serializers.ValidationError(
                {"file": [f"not UTF-8 text (byte {exc.start}): key files are findmy JSON or CSV"]}
            ) from None

    def get_serializer_class(self) -> Any:
        return TrackerImportSerializer if self.action == "create" else TrackerSerializer
