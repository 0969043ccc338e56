"""What the API adds to knox's tokens: a name and the time of last use.

A one-to-one side table rather than a swapped knox token model (KNOX_TOKEN_MODEL): knox's
table, its migrations and the tokens already issued stay exactly as they are (no data
migration, no orphaned table), and code that creates tokens through knox keeps working.
"""

from __future__ import annotations

from django.db import models
from knox.models import AuthToken

TOKEN_NAME_MAX_LENGTH = 100


class TokenDetails(models.Model):
    """The name and last use of one knox token; deleted with it (revocation)."""

    # Its own integer id for /api/v1/tokens/{id}: knox's key is the token's hash.
    token = models.OneToOneField(AuthToken, on_delete=models.CASCADE, related_name="details")
    name = models.CharField(max_length=TOKEN_NAME_MAX_LENGTH)
    # Recorded at most once a minute per token (api.auth), so it is exact to the minute.
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "token details"
        verbose_name_plural = "token details"

    def __str__(self) -> str:
        return self.name
