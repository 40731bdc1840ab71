"""The one pagination of the API's lists: newest first, by an opaque cursor (stable while rows
are added), `?page_size=` up to 500."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class NewestFirstPagination(CursorPagination):
    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500
