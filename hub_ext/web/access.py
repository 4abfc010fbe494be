"""Access rules the platform's admin pages and APIs share (not a feature module)."""

from __future__ import annotations

from tornado import web


def require_scope(handler, scope: str, what: str) -> None:
    """403 unless the caller holds the unfiltered ``scope`` (admins do).

    Anonymous callers of an API get 403 as well; pages redirect them to the
    login first (``@web.authenticated``), so this only sees logged-in users there.
    """
    if handler.current_user is None:
        raise web.HTTPError(403, "Missing or invalid credentials.")
    if scope not in handler.parsed_scopes:
        raise web.HTTPError(403, f"Only administrators can {what} (needs scope {scope})")
