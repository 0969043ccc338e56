"""Fetch control: fetch a batch now, fetch one tracker now, reset the queue.

Each endpoint needs a named Django permission (`trackers.fetch_now`, `trackers.reset_queue`;
superusers have both), not merely a staff account, and is throttled per user (scope
"control", CONTROL_THROTTLE_RATE). Scripts authenticate with a knox token
(`Authorization: Bearer ...`); a browser's admin session works too, with a CSRF token.

These run the same claim/process/finish path as the workers (trackers.queue and
trackers.fetch), inside the request: a claim made here is an ordinary lease, so it never
collides with a worker's.
A fetch can take as long as findmy's retries (tens of seconds): allow for it in the web
server's request timeout.
"""

from __future__ import annotations

import dataclasses
import logging

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from trackers.fetch import BatchResult, process_claim
from trackers.models import Tracker
from trackers.queue import Claim, claim_work, initialize_queue, release
from trackers.worker import worker_name

log = logging.getLogger(__name__)

NOTHING_TO_FETCH = "nothing to fetch: no due tracker or no account may send now"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the tracker's or the queue's state."
    default_code = "conflict"


# --- request and response shapes --------------------------------------------------------
class FetchBatchRequestSerializer(serializers.Serializer):
    max_keys = serializers.IntegerField(
        min_value=1,
        max_value=64,  # Apple answers larger requests with partial data
        required=False,
        help_text="Keys in this batch (default MAX_KEYS_PER_BATCH).",
    )


class BatchResultSerializer(serializers.Serializer):
    trackers = serializers.IntegerField(help_text="Trackers in the batch.")
    requests = serializers.IntegerField(help_text="Requests sent (retries included).")
    new = serializers.IntegerField(help_text="Reports stored.")
    duplicates = serializers.IntegerField(help_text="Reports already stored.")
    failures = serializers.IntegerField()
    finished = serializers.IntegerField(help_text="Trackers whose lease was still ours.")
    outcome = serializers.CharField(help_text='"ok" or a failure category.')
    error = serializers.CharField(allow_blank=True)


class TrackerFetchResultSerializer(BatchResultSerializer):
    tracker = serializers.IntegerField()


class QueueInitializeResultSerializer(serializers.Serializer):
    released = serializers.IntegerField(help_text="Expired leases cleared.")
    made_due = serializers.IntegerField(help_text="Eligible trackers whose last fetch was reset.")


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ServiceUnavailableSerializer(DetailSerializer):
    failing = serializers.ListField(child=serializers.CharField())


def errors(permission: str) -> dict[int, OpenApiResponse]:
    """The answers every control endpoint may give besides its own."""
    return {
        401: OpenApiResponse(
            DetailSerializer, description="No credentials, or an invalid or expired token."
        ),
        403: OpenApiResponse(
            DetailSerializer,
            description=f"The user lacks the permission {permission}, or a session request "
            "came without its CSRF token.",
        ),
        429: OpenApiResponse(
            DetailSerializer,
            description="Throttled (CONTROL_THROTTLE_RATE per user); Retry-After says when "
            "to try again.",
        ),
        503: OpenApiResponse(
            ServiceUnavailableSerializer, description="The database is down or not migrated."
        ),
    }


# --- helpers ----------------------------------------------------------------------------
def worker() -> str:
    return worker_name("api")


def process(claim: Claim) -> BatchResult:
    """Process a claim; give it back at once if something unexpected breaks the request."""
    try:
        return process_claim(claim)
    except Exception:
        release(claim)
        raise


def why_not_fetchable(tracker: Tracker) -> str | None:
    """Why a claim would never take this tracker now, in an operator's words (or None)."""
    if tracker.quarantined_at is not None:
        return (
            f"tracker {tracker.pk} is quarantined since {tracker.quarantined_at:%Y-%m-%d %H:%M} "
            "UTC: clear the quarantine first"
        )
    if not tracker.is_active:
        return f"tracker {tracker.pk} is inactive"
    if not Tracker.objects.eligible().filter(pk=tracker.pk).exists():  # the database clock
        run = tracker.production_run
        ends = f"{run.ends_at:%Y-%m-%d %H:%M}" if run.ends_at else "open"
        return (
            f"tracker {tracker.pk} is outside its production run {run.name!r} "
            f"({run.starts_at:%Y-%m-%d %H:%M} to {ends} UTC)"
        )
    return None


def leased_detail(pk: int) -> str:
    holder = Tracker.objects.filter(pk=pk).values("claimed_by", "lease_until").first() or {}
    return (
        f"tracker {pk} is leased by {holder.get('claimed_by') or 'another worker'} "
        f"until {holder.get('lease_until')}"
    )


# --- views ------------------------------------------------------------------------------
class HasRequiredPermission(BasePermission):
    """The Django permission the view names in `required_permission` ("app.codename").

    is_staff grants nothing here: a staff user who may only look at the admin cannot start
    fetches or reset the queue. Superusers have every permission; an anonymous request gets
    a 401 (DRF: not authenticated), a user without the permission a 403.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        permission = view.required_permission
        self.message = f"You need the permission {permission} for this."
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(permission))


class ControlView(APIView):
    permission_classes = [HasRequiredPermission]
    throttle_classes = [ScopedRateThrottle]  # per user, in the default cache
    throttle_scope = "control"
    required_permission: str = ""


class FetchBatchView(ControlView):
    required_permission = "trackers.fetch_now"

    @extend_schema(
        summary="Claim and fetch one batch now",
        request=FetchBatchRequestSerializer,
        responses={
            200: BatchResultSerializer,
            400: OpenApiResponse(description="Invalid max_keys (field errors)."),
            **errors(required_permission),
            409: OpenApiResponse(DetailSerializer, description=NOTHING_TO_FETCH),
        },
        tags=["fetch control"],
    )
    def post(self, request: Request) -> Response:
        params = FetchBatchRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        claim = claim_work(worker(), max_keys=params.validated_data.get("max_keys"))
        if claim is None:
            raise Conflict(NOTHING_TO_FETCH)
        result = process(claim)
        log.info("batch fetched on request", extra={"user": request.user.get_username()})
        return Response(BatchResultSerializer(dataclasses.asdict(result)).data)


class FetchTrackerView(ControlView):
    required_permission = "trackers.fetch_now"

    @extend_schema(
        summary="Make one tracker due and fetch it alone, now",
        request=None,
        responses={
            200: TrackerFetchResultSerializer,
            **errors(required_permission),
            404: OpenApiResponse(DetailSerializer, description="No such tracker."),
            409: OpenApiResponse(
                DetailSerializer,
                description="Quarantined, inactive, outside its production run, leased by "
                "another worker, or no account may send now. Nothing is changed.",
            ),
        },
        tags=["fetch control"],
    )
    def post(self, request: Request, pk: int) -> Response:
        tracker = get_object_or_404(
            Tracker.objects.select_related("production_run").defer("key_material"), pk=pk
        )
        reason = why_not_fetchable(tracker)
        if reason:
            raise Conflict(reason)
        # Claimed whether due or not, and only if nobody holds it: a worker's batch in
        # flight is never disturbed, and a 409 leaves the tracker exactly as it was.
        if not Tracker.objects.filter(pk=pk).unleased().exists():
            raise Conflict(leased_detail(pk))
        claim = claim_work(worker(), tracker_ids=[pk], due_only=False)
        if claim is None:
            raise Conflict(
                f"tracker {pk} was not fetched: no account may send now "
                "(or a worker claimed it meanwhile); nothing was changed"
            )
        result = process(claim)
        log.info(
            "tracker fetched on request", extra={"tracker": pk, "user": request.user.get_username()}
        )
        return Response(
            TrackerFetchResultSerializer({"tracker": pk, **dataclasses.asdict(result)}).data
        )


class QueueInitializeView(ControlView):
    required_permission = "trackers.reset_queue"

    @extend_schema(
        summary="Release expired leases and make every eligible tracker due",
        request=None,
        responses={200: QueueInitializeResultSerializer, **errors(required_permission)},
        tags=["fetch control"],
    )
    def post(self, request: Request) -> Response:
        counts = initialize_queue()
        log.info("queue initialized", extra={**counts, "user": request.user.get_username()})
        return Response(QueueInitializeResultSerializer(counts).data)
