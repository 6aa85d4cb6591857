"""API token authentication in one SQL statement.

DRF's ``TokenAuthentication`` answers the same thing through the ORM
(``Token.objects.select_related("user").get(key=...)``), whose query compilation cost more
than the query on every API request (bench/review_bench.py). This subclass reads the token
and its user in one statement and behaves identically: the token is looked
up on every request (a deleted token or a deactivated user is refused at once, nothing is
cached), the same errors ("Invalid token.", "User inactive or deleted."), the same
``WWW-Authenticate`` header and the same OpenAPI security scheme (drf-spectacular matches
subclasses).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from redline.lib.db import hot_cursor
from redline.lib.rows import RowReader

_users: RowReader | None = None
_tokens = RowReader(Token)


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        global _users
        if self.get_model() is not Token:  # a subclass chose another model: DRF's way
            return super().authenticate_credentials(key)
        if _users is None:
            _users = RowReader(get_user_model())
        sql = (
            f"SELECT {_tokens.columns('t')}, {_users.columns('u')}"  # noqa: S608 (names only)
            f" FROM {Token._meta.db_table} t"
            f" JOIN {get_user_model()._meta.db_table} u"
            f" ON u.{get_user_model()._meta.pk.column} = t.user_id"
            " WHERE t.key = %s"
        )
        with hot_cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token = _tokens.build(row)
        user = _users.build(row, len(_tokens))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return (user, token)
