"""The account circuit breaker, shared by every worker through the account row.

Closed (active) -> open (backing off until `backoff_until`) after BREAKER_FAILURE_THRESHOLD
failures in a row, at once on rate limiting; half-open once the cool-down is over (the next
request decides); closed again by a success. The cool-down doubles per further failure.
Authentication failures park the account (needs login) until an operator logs it in again;
an endpoint the account may not send its tokens to disables it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Now

from .findmy_client import FailureCategory, FetchError
from .leases import ACCOUNT_LEASE
from .models import USABLE_STATUSES, AccountStatus, AppleAccount, seconds
from .queue import Claim, release_account

MAX_BACKOFF_SECONDS = 24 * 3600


def mark_request(claim: Claim, *, count: bool) -> None:
    """Stamp the account's last request (by the database clock), counting it if asked."""
    changes: dict[str, Any] = {"last_request_at": Now()}
    if count:
        changes["requests_total"] = F("requests_total") + 1
    ACCOUNT_LEASE.mine(
        AppleAccount.objects.filter(id=claim.account_id), claim.request_token
    ).update(**changes)


def succeed(claim: Claim, new_state: dict[str, Any]) -> int:
    """Save the account's refreshed state, free it, and close its circuit."""
    return release_account(
        claim,
        state=new_state,
        consecutive_failures=0,
        backoff_until=None,
        last_error="",
        # An operator may have disabled the account meanwhile: only a breaker closes here.
        status=Case(
            When(status=AccountStatus.BACKING_OFF, then=Value(AccountStatus.ACTIVE)),
            default=F("status"),
        ),
    )


def trip(claim: Claim, error: FetchError) -> None:
    """Count a failed request against the claim's account (if the lease is still ours)."""
    with transaction.atomic():
        account = ACCOUNT_LEASE.mine(
            AppleAccount.objects.select_for_update().filter(id=claim.account_id),
            claim.request_token,
        ).first()
        if account is None:
            return
        failures = account.consecutive_failures + 1
        threshold = settings.BREAKER_FAILURE_THRESHOLD
        changes: dict[str, Any] = {
            **ACCOUNT_LEASE.cleared(),
            "consecutive_failures": failures,
            "last_error": error.message[:2000],
        }
        usable = account.status in USABLE_STATUSES
        if error.category == FailureCategory.AUTH:
            changes["status"] = AccountStatus.NEEDS_LOGIN
        elif error.category == FailureCategory.ENDPOINT:
            changes["status"] = AccountStatus.DISABLED
        elif usable and (failures >= threshold or error.category == FailureCategory.RATE_LIMITED):
            # Rate limiting opens the circuit at once; other faults after `threshold` in a
            # row. The cool-down doubles for every further failure (half-open probes too).
            cooldown = settings.BREAKER_COOLDOWN * 2 ** min(max(failures - threshold, 0), 10)
            changes["status"] = AccountStatus.BACKING_OFF
            changes["backoff_until"] = Now() + seconds(min(cooldown, MAX_BACKOFF_SECONDS))
        AppleAccount.objects.filter(id=account.id).update(**changes)
