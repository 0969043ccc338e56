"""Least privilege with CSRF checks on: staff users get what their permissions say, no more.

Every client here enforces CSRF like a browser would (Django's test client skips it by
default), so a POST without the token, or from another origin, must change nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken

from monitoring.models import FailureRecord
from trackers.models import AppleAccount, ProductionRun, Tracker

from .factories import AppleAccountFactory, TrackerFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_throttle_cache(settings: Any) -> None:
    # Control requests count against a per-user throttle in the default cache (Redis,
    # shared with other test runs whose user ids repeat): each test counts on its own.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": uuid.uuid4().hex,
        }
    }


def url(model: type[Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def logged_in(*codenames: str, is_staff: bool = True) -> Client:
    """A browser-like client (CSRF enforced) of a user with exactly these permissions."""
    user = UserFactory(is_staff=is_staff)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token(client: Client) -> str:
    """The token a page hands the browser: the admin index (its logout form) for staff, the
    login page it redirects to for anyone else."""
    client.get(reverse("admin:index"), follow=True)
    return client.cookies["csrftoken"].value


def make_due_now(client: Client, tracker: Tracker, token: str | None) -> Any:
    data = {"action": "make_due_now", "_selected_action": [tracker.pk]}
    if token is not None:
        data["csrfmiddlewaretoken"] = token
    return client.post(url(Tracker, "changelist"), data)


def is_due(tracker: Tracker) -> bool:
    return Tracker.objects.eligible().due().filter(pk=tracker.pk).exists()


@pytest.fixture
def viewer() -> Client:
    """A staff user who may look at trackers and accounts, and change nothing."""
    return logged_in("view_tracker", "view_appleaccount")


@pytest.fixture
def fresh() -> Tracker:
    """A tracker fetched a minute ago: not due, so making it due shows."""
    return TrackerFactory(last_processed_at=timezone.now() - dt.timedelta(minutes=1))


# --- the admin: a view-only staff user --------------------------------------------------
def test_viewer_sees_the_tracker_list_and_pages(viewer: Client, fresh: Tracker) -> None:
    listing = viewer.get(url(Tracker, "changelist"))
    page = viewer.get(url(Tracker, "change", fresh.pk))
    assert (listing.status_code, page.status_code) == (200, 200)
    assert fresh.name in listing.text
    assert 'name="_save"' not in page.text  # a read-only page


def test_viewer_is_offered_no_action(viewer: Client, fresh: Tracker) -> None:
    page = viewer.get(url(Tracker, "changelist")).text
    assert 'value="make_due_now"' not in page
    assert 'name="action"' not in page


def test_viewer_cannot_run_an_action_even_with_a_csrf_token(viewer: Client, fresh: Tracker) -> None:
    make_due_now(viewer, fresh, csrf_token(viewer))
    assert not is_due(fresh)


def test_viewer_cannot_edit_a_tracker(viewer: Client, fresh: Tracker) -> None:
    response = viewer.post(
        url(Tracker, "change", fresh.pk),
        {"name": "renamed", "csrfmiddlewaretoken": csrf_token(viewer), "_save": 1},
    )
    assert response.status_code == 403
    fresh.refresh_from_db()
    assert fresh.name != "renamed"


@pytest.mark.parametrize("model", [ProductionRun, FailureRecord, AuthToken])
def test_viewer_cannot_open_models_without_a_permission(viewer: Client, model: type[Model]):
    assert viewer.get(url(model, "changelist")).status_code == 403


def test_viewer_sees_accounts_read_only(viewer: Client) -> None:
    account = AppleAccountFactory()
    page = viewer.get(url(AppleAccount, "change", account.pk))
    assert (page.status_code, 'name="_save"' in page.text) == (200, False)


# --- the admin: a staff user who may change trackers ------------------------------------
def test_editor_runs_an_action_with_a_csrf_token(fresh: Tracker) -> None:
    editor = logged_in("view_tracker", "change_tracker")
    response = make_due_now(editor, fresh, csrf_token(editor))
    assert response.status_code == 302
    assert is_due(fresh)


def test_a_post_without_a_csrf_token_is_refused_and_changes_nothing(fresh: Tracker) -> None:
    editor = logged_in("view_tracker", "change_tracker")
    response = make_due_now(editor, fresh, token=None)
    assert response.status_code == 403
    assert not is_due(fresh)


def test_a_post_from_another_origin_is_refused(fresh: Tracker) -> None:
    editor = logged_in("view_tracker", "change_tracker")
    token = csrf_token(editor)
    response = editor.post(
        url(Tracker, "changelist"),
        {"action": "make_due_now", "_selected_action": [fresh.pk], "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="https://evil.example.com",
    )
    assert response.status_code == 403
    assert not is_due(fresh)


# --- control endpoints from a browser session -------------------------------------------
@pytest.fixture
def resetter() -> Client:
    """A user with trackers.reset_queue, logged in through the admin's session."""
    return logged_in("reset_queue", is_staff=False)


def test_control_from_a_session_without_a_csrf_token_is_refused(
    resetter: Client, fresh: Tracker
) -> None:
    response = resetter.post("/queue/initialize")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not is_due(fresh)


def test_control_from_a_session_with_a_csrf_token_works(resetter: Client, fresh: Tracker) -> None:
    response = resetter.post("/queue/initialize", HTTP_X_CSRFTOKEN=csrf_token(resetter))
    assert (response.status_code, response.json()["made_due"]) == (200, 1)
    assert is_due(fresh)


def test_control_from_another_origin_is_refused_even_with_a_token(
    resetter: Client, fresh: Tracker
) -> None:
    response = resetter.post(
        "/queue/initialize",
        HTTP_X_CSRFTOKEN=csrf_token(resetter),
        HTTP_ORIGIN="https://evil.example.com",
    )
    assert response.status_code == 403
    assert not is_due(fresh)


def test_control_with_a_bearer_token_needs_no_csrf_token(fresh: Tracker) -> None:
    user = UserFactory()
    user.user_permissions.add(Permission.objects.get(codename="reset_queue"))
    _, token = AuthToken.objects.create(user=user, expiry=None)
    client = Client(enforce_csrf_checks=True)
    response = client.post("/queue/initialize", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert is_due(fresh)
