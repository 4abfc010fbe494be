"""Steps the browser tests share."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def login(page, base_url: str, user: str, password: str, next_path: str | None = None) -> None:
    """The hub's login form; next_path (e.g. /jupyterhub/hub/home) instead of the
    default landing, which starts the user's lab."""
    page.goto(base_url + "hub/login" + (f"?next={quote(next_path)}" if next_path else ""))
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_load_state()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
