"""The broadcast's delivery settings: :class:`Notifications` (``c.Notifications.*``).

Nothing runs in the background; the HTTP side is
:mod:`hub_ext.notifications.handlers`, the rules :mod:`hub_ext.notifications.broadcast`.
"""

from __future__ import annotations

from traitlets import Float, Integer
from traitlets.config import LoggingConfigurable

from hub_ext.notifications import broadcast as notifications

SETTINGS_KEY = "hub_ext_notifications"  # tornado settings key the handlers read


class Notifications(LoggingConfigurable):
    """Delivery settings of the broadcast (site-local tunables, c.Notifications.*)."""

    timeout = Float(
        5.0, help="Seconds one lab may take to accept a notification before it counts as failed."
    ).tag(config=True)
    token_expires_in = Integer(
        60,
        help="Lifetime in seconds of the per-delivery token (deleted right after the delivery).",
    ).tag(config=True)

    # seam for tests: coroutine (url, token, payload, timeout) -> None or DeliveryError
    post = staticmethod(notifications.post_ingest)
