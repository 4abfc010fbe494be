"""A user's lab cannot act on the hub as whoever opens one of its pages.

The attack of issue 13, replayed in Chromium: a user makes their own lab serve
an unauthenticated page (``c.ServerApp.extra_static_paths`` in
``~/.jupyter/jupyter_server_config.py``, then a real restart of the lab through
the hub), the admin's logged-in browser opens it, and its script tries what a
page on the hub's origin could do: read ``/hub/token`` (for the ``_xsrf`` value
of the admin's session) and ``POST /hub/api/users/<admin>/tokens``. It tries
both from the lab's own origin (relative URLs) and against the hub's origin.

With one origin per user (``jupyterhub_user_subdomains``, the default) every
attempt must fail and no new token may exist for anyone afterwards. On a host
deployed with a single origin (``TESTHOST_SINGLE_ORIGIN=1``) this same test
fails: the page reads the token page and gets a 201.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from browserutil import login
from hubclient import HubClient, batch_create, lab_cell, unique_names

PAGE = "issue13.html"
MARKER = "served-by-the-lab-" + secrets.token_hex(4)

# The attacker's page: every attempt records what it got into window.stolen.
ATTACK_PAGE = textwrap.dedent("""\
    <!doctype html>
    <title>{marker}</title>
    <script>
    async function attempt(prefix) {{
      const out = {{xsrf: null}};
      try {{
        const page = await fetch(prefix + "hub/token", {{credentials: "include"}});
        out.token_page = page.status;
        const found = (await page.text()).match(/xsrf_token: "([^"]+)"/);
        out.xsrf = found ? found[1] : null;
      }} catch (e) {{
        out.token_page = "refused: " + e;
      }}
      try {{
        const made = await fetch(prefix + "hub/api/users/{victim}/tokens", {{
          method: "POST", credentials: "include",
          headers: {{"Content-Type": "application/json", "X-XSRFToken": out.xsrf || ""}},
          body: JSON.stringify({{note: "stolen by a lab page", expires_in: 600}}),
        }});
        out.create = made.status;
      }} catch (e) {{
        out.create = "refused: " + e;
      }}
      return out;
    }}
    (async () => {{
      window.stolen = {{
        lab_origin: await attempt({base_path}),
        hub_origin: await attempt({hub_url}),
      }};
    }})();
    </script>
""")


def all_token_ids(admin) -> dict[str, set[str]]:
    """Every user's API token ids, through the admin's API (page by page)."""
    names: list[str] = []
    while True:
        page = admin.api("GET", "users", params={"offset": len(names), "limit": 100})
        assert page.status_code == 200, page.text
        names += [user["name"] for user in page.json()]
        if len(page.json()) < 100:
            break
    tokens = {}
    for name in names:
        r = admin.api("GET", f"users/{name}/tokens")
        assert r.status_code == 200, r.text
        tokens[name] = {t["id"] for t in r.json()["api_tokens"]}
    return tokens


def serve_page_from_own_lab(admin, user: str, page_html: str) -> None:
    """What the user does in their own lab: an extra static path with the page,
    then a restart of the lab so the server reads its new configuration."""
    code = textwrap.dedent(f"""\
        import os, pathlib
        home = pathlib.Path.home()
        served = home / "served"
        served.mkdir(exist_ok=True)
        (served / {PAGE!r}).write_text({page_html!r})
        config = home / ".jupyter" / "jupyter_server_config.py"
        config.parent.mkdir(exist_ok=True)
        config.write_text(f"c.ServerApp.extra_static_paths = [{{str(served)!r}}]\\n")
        print("written", config)
    """)
    # in a thread of its own: Playwright's event loop holds this one
    with ThreadPoolExecutor(1) as thread:
        out, status = thread.submit(lab_cell, admin, user, code).result()
    assert status == "ok", out
    admin.stop_server(user)
    admin.start_server(user)


def test_a_page_served_by_a_lab_cannot_act_on_the_hub(host, admin, chromium):
    mallory, = unique_names(1, "mallory")
    batch_create(admin, [mallory])
    admin.start_server(mallory)
    hub_url = host.https_url
    attack = ATTACK_PAGE.format(marker=MARKER, victim=host.admin_user,
                                base_path=json.dumps(urlparse(hub_url).path),
                                hub_url=json.dumps(hub_url))
    serve_page_from_own_lab(admin, mallory, attack)
    page_url = admin.url(f"user/{mallory}/static/{PAGE}")
    try:
        # the page is real and needs no login: anyone who follows the link runs it
        anonymous = HubClient(hub_url)
        served = anonymous.get(f"user/{mallory}/static/{PAGE}", allow_redirects=False)
        assert served.status_code == 200 and MARKER in served.text, served.status_code

        context = chromium.new_context(ignore_https_errors=True)
        try:
            browser = context.new_page()
            login(browser, hub_url, host.admin_user, host.admin_password,
                  next_path=urlparse(hub_url).path + "hub/home")
            assert browser.url.startswith(hub_url + "hub/home"), browser.url
            tokens_before = all_token_ids(admin)
            browser.goto(page_url)
            assert browser.title() == MARKER
            browser.wait_for_function("window.stolen !== undefined", timeout=60_000)
            stolen = browser.evaluate("window.stolen")
        finally:
            context.close()
        print(f"\nthe lab page at {page_url} got: {json.dumps(stolen, indent=1)}")

        for where, got in stolen.items():
            assert got["xsrf"] is None, f"{where}: the page read the admin's token page: {got}"
            assert got["create"] not in (200, 201), f"{where}: the page made a token: {got}"
        assert all_token_ids(admin) == tokens_before, "a token appeared"
    finally:
        admin.stop_server(mallory)
