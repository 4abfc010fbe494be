"""The home page's Session Status card in a real browser: it counts down and extending updates it."""

from __future__ import annotations

import pytest

from browserutil import login, screenshot

DROPIN = """\
c.SessionCuller.enabled = True
c.SessionCuller.timeout = 3600
c.SessionCuller.interval = 5
c.SessionCuller.max_extension_hours = 4
"""


@pytest.fixture(scope="module")
def culling(hub_dropin):
    hub_dropin("90-test-session-card.py", DROPIN)


def remaining(page) -> int:
    return int(page.get_attribute("#session-status", "data-remaining"))


def test_card_counts_down_and_extend_updates_it(host, admin, culling, page):
    admin.ensure_server(host.admin_user)
    login(page, host.https_url, host.admin_user, host.admin_password)
    page.goto(host.https_url + "hub/home")
    page.wait_for_selector("#session-status[data-remaining]", state="visible")
    first = remaining(page)
    assert 0 < first <= 3600
    page.wait_for_timeout(2500)
    assert remaining(page) < first, "the card does not count down"

    before = remaining(page)
    page.fill("#session-extend-hours", "1")
    page.click("#session-extend-button")
    page.wait_for_selector("#session-message.alert")
    assert "extended" in page.inner_text("#session-message").lower()
    assert remaining(page) > before + 3000, "extending did not move the deadline"
    assert "1 of 4 hour(s) used" in page.inner_text("#session-extensions")
    screenshot(page, "home-session-card")
    assert page.console_errors == []
