"""The owners' pages: /map/ and the login and logout at /accounts/."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from . import views

urlpatterns = [
    path("", RedirectView.as_view(url="/map/", permanent=False)),
    path("map/", views.MapView.as_view(), name="map"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
]
