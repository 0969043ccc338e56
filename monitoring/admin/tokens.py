"""API tokens in the admin: created with a name (the token is shown on the page that follows
the save, once, and never again: only its hash is stored), listed with their last use, revoked
by deleting them. Replaces knox's own token page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from knox.models import AuthToken

from api.auth import DEFAULT_EXPIRY_HOURS, MAX_EXPIRY_HOURS, check_token_name, create_token
from api.models import TOKEN_NAME_MAX_LENGTH

from .base import EMPTY

if admin.site.is_registered(AuthToken):
    admin.site.unregister(AuthToken)  # knox's page: no names, and its token goes in a message


class TokenCreateForm(forms.ModelForm):
    name = forms.CharField(max_length=TOKEN_NAME_MAX_LENGTH, help_text="What the token is for.")
    expiry_hours = forms.IntegerField(
        min_value=0,
        max_value=MAX_EXPIRY_HOURS,
        initial=DEFAULT_EXPIRY_HOURS,
        help_text="Hours until it expires; 0: never.",
    )

    class Meta:
        model = AuthToken
        fields = ["user"]

    def clean_name(self) -> str:
        try:
            return check_token_name(self.cleaned_data["name"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(AuthToken)
class TokenAdmin(admin.ModelAdmin):
    list_display = ["token_name", "user", "created", "last_used", "expiry"]
    list_select_related = ["user", "details"]
    search_fields = ["details__name", "user__" + get_user_model().USERNAME_FIELD]
    ordering = ["-created"]
    empty_value_display = EMPTY
    raw_id_fields = ["user"]
    readonly_fields = ["token_name", "user", "created", "last_used", "expiry"]

    def get_fields(self, request: HttpRequest, obj: AuthToken | None = None) -> list[str]:
        if obj is None:
            return ["user", "name", "expiry_hours"]
        return self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: AuthToken | None = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_form(self, request: HttpRequest, obj: AuthToken | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = TokenCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuthToken]:
        return super().get_queryset(request).select_related("user", "details")

    def has_change_permission(self, request: HttpRequest, obj: AuthToken | None = None) -> bool:
        return False  # a token is created or revoked, never edited

    def save_model(self, request: HttpRequest, obj: AuthToken, form: Any, change: bool) -> None:
        instance, token = create_token(
            form.cleaned_data["user"], form.cleaned_data["name"], form.cleaned_data["expiry_hours"]
        )
        obj.pk, obj.digest, obj.created, obj.expiry = (
            instance.pk,
            instance.digest,
            instance.created,
            instance.expiry,
        )
        obj._new_token = token  # type: ignore[attr-defined]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # create_token() wrote everything

    def response_add(
        self, request: HttpRequest, obj: AuthToken, post_url_continue: Any = None
    ) -> HttpResponse:
        # The token is on this page, in this answer only: not in a message (a cookie or the
        # session), not in a redirect.
        context = {
            **self.admin_site.each_context(request),
            "title": "API token created",
            "opts": self.opts,
            "token": obj._new_token,  # type: ignore[attr-defined]
            "token_obj": obj,
            "name": obj.details.name,
        }
        # The admin's views are never_cache already: no copy of this page stays in a cache.
        return TemplateResponse(request, "admin/api/token_created.html", context)

    @admin.display(description="name", ordering="details__name")
    def token_name(self, obj: AuthToken) -> str:
        details = getattr(obj, "details", None)
        return details.name if details else EMPTY

    @admin.display(description="last used", ordering="details__last_used_at")
    def last_used(self, obj: AuthToken) -> Any:
        details = getattr(obj, "details", None)
        return details.last_used_at if details and details.last_used_at else EMPTY
