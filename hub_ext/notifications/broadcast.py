"""Admin notification broadcast to running labs (jupyterlab-notifications-extension).

The lab side is the ``jupyterlab-notifications-extension`` server extension in
the user venv: ``POST <lab>/jupyterlab-notifications-extension/ingest`` with
``Authorization: token <hub API token>`` queues a notification that the lab's
frontend shows as a toast; ``GET <lab>/jupyterlab-notifications-extension/notifications``
drains the queue (what the frontend polls).

This module holds the request rules (:func:`parse_broadcast`), who gets what
(:func:`plan_delivery`), the parallel delivery with a per-server timeout
(:func:`deliver_all`, which takes the sending coroutine as an argument so it is
tested with fakes) and the HTTP POST itself (:func:`post_ingest`, tornado's
AsyncHTTPClient). The hub handlers (hub_ext.notifications.handlers) mint the
per-delivery token and do the database reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# the six types of the original (and of the extension)
NOTIFICATION_TYPES = ("default", "info", "success", "warning", "error", "in-progress")
DEFAULT_TYPE = "info"
MAX_MESSAGE_LENGTH = 140
# what "auto-close" means when the form only says yes (the extension's default)
DEFAULT_AUTO_CLOSE_MS = 5000
MAX_AUTO_CLOSE_MS = 3_600_000
MAX_RECIPIENTS = 10_000

INGEST_PATH = "jupyterlab-notifications-extension/ingest"
FETCH_PATH = "jupyterlab-notifications-extension/notifications"

SUCCESS = "success"
FAILED = "failed"
NOT_ACTIVE = "Server not running"
UNKNOWN_USER = "No such user"

log = logging.getLogger(__name__)


class BroadcastRequestError(ValueError):
    """The broadcast request is invalid; the message says why (answered with 400)."""


class DeliveryError(Exception):
    """A lab did not take the notification; the message is the per-user reason."""


@dataclass(frozen=True)
class Broadcast:
    message: str
    variant: str = DEFAULT_TYPE
    auto_close: int | bool = False  # milliseconds, or False: stays until dismissed
    recipients: tuple[str, ...] | None = None  # None: every active server

    def payload(self) -> dict[str, Any]:
        """The extension's ingest body."""
        return {
            "message": self.message,
            "type": self.variant,
            "autoClose": self.auto_close,
            "immediate": True,
            "actions": [
                {"label": "Dismiss", "caption": "Close this notification", "displayType": "default"}
            ],
        }


def _auto_close(value) -> int | bool:
    if value is None or value is False:
        return False
    if value is True:
        return DEFAULT_AUTO_CLOSE_MS
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_AUTO_CLOSE_MS:
        return value
    raise BroadcastRequestError(
        f"autoClose must be true, false or milliseconds in 1-{MAX_AUTO_CLOSE_MS}"
    )


def parse_broadcast(body: Any) -> Broadcast:
    """Check a broadcast request body (the original's shape); raise BroadcastRequestError.

    ``{"message": str (1-140 characters), "variant": one of NOTIFICATION_TYPES
    (default "info"), "autoClose": bool or milliseconds, "recipients": [names]
    (optional; missing, null or empty: every active server)}``
    """
    if not isinstance(body, Mapping):
        raise BroadcastRequestError("The request body must be a JSON object")
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise BroadcastRequestError("Message cannot be empty")
    message = message.strip()
    if len(message) > MAX_MESSAGE_LENGTH:
        raise BroadcastRequestError(
            f"Message cannot exceed {MAX_MESSAGE_LENGTH} characters (got {len(message)})"
        )
    variant = body.get("variant", DEFAULT_TYPE)
    if variant not in NOTIFICATION_TYPES:
        raise BroadcastRequestError(
            f"Variant must be one of: {', '.join(NOTIFICATION_TYPES)}"
        )
    auto_close = _auto_close(body.get("autoClose", False))
    recipients = body.get("recipients")
    if recipients is not None:
        if not isinstance(recipients, list) or not all(
            isinstance(r, str) and r for r in recipients
        ):
            raise BroadcastRequestError("recipients must be a list of user names")
        if len(recipients) > MAX_RECIPIENTS:
            raise BroadcastRequestError(f"At most {MAX_RECIPIENTS} recipients")
        # keep the order, drop repeats; empty means everybody (as the original)
        recipients = tuple(dict.fromkeys(recipients)) or None
    return Broadcast(message, variant, auto_close, recipients)


@dataclass(frozen=True)
class Target:
    """A running lab to deliver to."""

    username: str
    url: str  # the lab's own base URL as the hub reaches it, e.g. http://127.0.0.1:PORT/jupyterhub/user/ann/


@dataclass(frozen=True)
class DeliveryResult:
    username: str
    status: str  # SUCCESS or FAILED
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"username": self.username, "status": self.status}
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class Plan:
    targets: list[Target] = field(default_factory=list)
    refused: list[DeliveryResult] = field(default_factory=list)  # not active / unknown


def plan_delivery(
    active: Mapping[str, str], recipients: Sequence[str] | None, known_users: Iterable[str]
) -> Plan:
    """Who gets the notification: every active server, or the chosen recipients.

    ``active`` maps user name -> lab URL of every ready server. A chosen
    recipient without a running server is reported failed with NOT_ACTIVE,
    an unknown name with UNKNOWN_USER.
    """
    plan = Plan()
    if recipients is None:
        plan.targets = [Target(name, url) for name, url in sorted(active.items())]
        return plan
    known = set(known_users)
    for name in recipients:
        if name in active:
            plan.targets.append(Target(name, active[name]))
        elif name in known:
            plan.refused.append(DeliveryResult(name, FAILED, NOT_ACTIVE))
        else:
            plan.refused.append(DeliveryResult(name, FAILED, UNKNOWN_USER))
    return plan


Send = Callable[[Target], Awaitable[None]]


async def _deliver_one(target: Target, send: Send, timeout: float) -> DeliveryResult:
    try:
        await asyncio.wait_for(send(target), timeout)
    except TimeoutError:
        return DeliveryResult(target.username, FAILED, f"Timed out after {timeout:g}s")
    except DeliveryError as e:
        return DeliveryResult(target.username, FAILED, str(e))
    except Exception as e:  # one lab's trouble never spoils the others' results
        log.exception("Notification to %s failed", target.username)
        return DeliveryResult(target.username, FAILED, f"Unexpected error ({type(e).__name__})")
    return DeliveryResult(target.username, SUCCESS)


async def deliver_all(targets: Sequence[Target], send: Send, timeout: float) -> list[DeliveryResult]:
    """Send to every target at once; each gets at most ``timeout`` seconds."""
    return list(await asyncio.gather(*(_deliver_one(t, send, timeout) for t in targets)))


def summarize(results: Sequence[DeliveryResult]) -> dict[str, Any]:
    """The original's answer: total, successful, failed, details (one per user)."""
    successful = sum(1 for r in results if r.status == SUCCESS)
    summary: dict[str, Any] = {
        "total": len(results),
        "successful": successful,
        "failed": len(results) - successful,
        "details": [r.to_dict() for r in results],
    }
    if not results:
        summary["message"] = "No active servers found"
    return summary


def ingest_url(lab_url: str) -> str:
    return lab_url.rstrip("/") + "/" + INGEST_PATH


def http_failure_reason(code: int) -> str:
    """The per-user reason shown for a lab's HTTP answer other than 200."""
    if code == 404:
        return "Notification extension not installed in the lab (HTTP 404)"
    if code in (401, 403):
        return f"The lab refused the delivery token (HTTP {code})"
    return f"The lab answered HTTP {code}"


async def post_ingest(url: str, token: str, payload: Mapping[str, Any], timeout: float) -> None:
    """POST one notification to a lab's ingest endpoint; raise DeliveryError on failure."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

    request = HTTPRequest(
        ingest_url(url),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"token {token}"},
        body=json.dumps(payload),
        connect_timeout=timeout,
        request_timeout=timeout,
        follow_redirects=False,
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except ConnectionRefusedError:
        raise DeliveryError("The lab is not reachable (connection refused)") from None
    except OSError as e:
        raise DeliveryError(f"The lab is not reachable ({e.strerror or type(e).__name__})") from None
    except HTTPClientError as e:  # 599: tornado's timeout or network error, raised even so
        if "timeout" in str(e).lower():
            raise DeliveryError(f"Timed out after {timeout:g}s") from None
        raise DeliveryError(f"The lab is not reachable ({e})") from None
    if response.code != 200:
        raise DeliveryError(http_failure_reason(response.code))
