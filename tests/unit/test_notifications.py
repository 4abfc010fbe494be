"""Broadcast rules and the parallel delivery (hub_ext.notifications.broadcast), with fake senders."""

import asyncio
import json

import pytest

from hub_ext.notifications import broadcast as n


def test_parse_accepts_the_originals_shape():
    b = n.parse_broadcast({"message": "  Maintenance at 18:00  ", "variant": "warning",
                           "autoClose": False, "recipients": ["ann", "bob", "ann"]})
    assert b == n.Broadcast("Maintenance at 18:00", "warning", False, ("ann", "bob"))
    assert n.parse_broadcast({"message": "x"}) == n.Broadcast("x", "info", False, None)
    assert n.parse_broadcast({"message": "x", "recipients": []}).recipients is None
    assert n.parse_broadcast({"message": "x", "autoClose": True}).auto_close == 5000
    assert n.parse_broadcast({"message": "x", "autoClose": 2000}).auto_close == 2000


def test_all_six_types_of_the_original_are_accepted():
    assert n.NOTIFICATION_TYPES == ("default", "info", "success", "warning", "error", "in-progress")
    for t in n.NOTIFICATION_TYPES:
        assert n.parse_broadcast({"message": "x", "variant": t}).variant == t


def test_140_characters_is_the_limit():
    assert n.parse_broadcast({"message": "é" * 140}).message == "é" * 140
    with pytest.raises(n.BroadcastRequestError, match="140 characters"):
        n.parse_broadcast({"message": "x" * 141})


@pytest.mark.parametrize("body, message", [
    (None, "JSON object"),
    ([], "JSON object"),
    ({}, "empty"),
    ({"message": "   "}, "empty"),
    ({"message": 5}, "empty"),
    ({"message": "x", "variant": "loud"}, "Variant must be one of"),
    ({"message": "x", "autoClose": -1}, "autoClose"),
    ({"message": "x", "autoClose": "5"}, "autoClose"),
    ({"message": "x", "autoClose": 10**9}, "autoClose"),
    ({"message": "x", "recipients": "ann"}, "list of user names"),
    ({"message": "x", "recipients": [1]}, "list of user names"),
    ({"message": "x", "recipients": [""]}, "list of user names"),
])
def test_bad_requests_say_why(body, message):
    with pytest.raises(n.BroadcastRequestError, match=message):
        n.parse_broadcast(body)


def test_payload_is_what_the_extension_ingests():
    p = n.Broadcast("<b>hi</b>", "error", 5000).payload()
    assert p["message"] == "<b>hi</b>"  # text, escaped by whoever displays it
    assert p["type"] == "error" and p["autoClose"] == 5000 and p["immediate"] is True
    assert all(isinstance(a["label"], str) for a in p["actions"])
    json.dumps(p, allow_nan=False)


def test_plan_everybody_active_or_chosen_recipients():
    active = {"bob": "http://127.0.0.1:2/u/bob/", "ann": "http://127.0.0.1:1/u/ann/"}
    plan = n.plan_delivery(active, None, ["ann", "bob", "cid"])
    assert [t.username for t in plan.targets] == ["ann", "bob"] and plan.refused == []

    plan = n.plan_delivery(active, ("bob", "cid", "ghost"), ["ann", "bob", "cid"])
    assert plan.targets == [n.Target("bob", active["bob"])]
    assert plan.refused == [n.DeliveryResult("cid", n.FAILED, n.NOT_ACTIVE),
                            n.DeliveryResult("ghost", n.FAILED, n.UNKNOWN_USER)]


def test_delivery_is_parallel_with_a_per_server_timeout():
    targets = [n.Target("fast", "u1"), n.Target("slow", "u2"), n.Target("broken", "u3"),
               n.Target("weird", "u4")]
    started = []

    async def send(target):
        started.append(target.username)
        if target.username == "slow":
            await asyncio.sleep(10)
        if target.username == "broken":
            raise n.DeliveryError("The lab answered HTTP 500")
        if target.username == "weird":
            raise KeyError("boom")

    async def run():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        results = await n.deliver_all(targets, send, timeout=0.2)
        return results, loop.time() - t0

    results, elapsed = asyncio.run(run())
    assert elapsed < 1.0, "deliveries ran one after the other or ignored the timeout"
    assert sorted(started) == ["broken", "fast", "slow", "weird"]
    by_user = {r.username: r for r in results}
    assert by_user["fast"].status == n.SUCCESS and by_user["fast"].error is None
    assert by_user["slow"].status == n.FAILED and by_user["slow"].error == "Timed out after 0.2s"
    assert by_user["broken"].error == "The lab answered HTTP 500"
    assert by_user["weird"].error == "Unexpected error (KeyError)"


def test_summary_has_the_originals_shape():
    s = n.summarize([n.DeliveryResult("ann", n.SUCCESS), n.DeliveryResult("bob", n.FAILED, "x")])
    assert s == {"total": 2, "successful": 1, "failed": 1, "details": [
        {"username": "ann", "status": "success"},
        {"username": "bob", "status": "failed", "error": "x"}]}
    assert n.summarize([])["message"] == "No active servers found"


def test_ingest_url_and_failure_reasons():
    assert n.ingest_url("http://127.0.0.1:5/jupyterhub/user/ann/") == \
        "http://127.0.0.1:5/jupyterhub/user/ann/jupyterlab-notifications-extension/ingest"
    assert "not installed" in n.http_failure_reason(404)
    assert "token" in n.http_failure_reason(403)
    assert "500" in n.http_failure_reason(500)


def test_post_ingest_against_a_real_local_server():
    """post_ingest's HTTP: token header, JSON body, and its failure reasons."""
    from tornado.httpserver import HTTPServer
    from tornado.testing import bind_unused_port
    from tornado.web import Application, RequestHandler

    seen = {}

    class Ingest(RequestHandler):
        def post(self, user):
            seen[user] = (self.request.headers.get("Authorization"), json.loads(self.request.body))
            if user == "denied":
                self.set_status(403)
            self.finish("{}")

    class Slow(RequestHandler):
        async def post(self):
            await asyncio.sleep(5)

    async def run():
        sock, port = bind_unused_port()
        server = HTTPServer(Application([
            (r"/user/(\w+)/jupyterlab-notifications-extension/ingest", Ingest),
            (r"/slow/jupyterlab-notifications-extension/ingest", Slow),
        ]))
        server.add_sockets([sock])
        base = f"http://127.0.0.1:{port}"
        out = {}
        await n.post_ingest(f"{base}/user/ann/", "tok-ann", {"message": "hi"}, 2)
        for name, url in [("denied", f"{base}/user/denied/"), ("missing", f"{base}/nothing/"),
                          ("slow", f"{base}/slow/")]:
            try:
                await n.post_ingest(url, "t", {"message": "hi"}, 0.3)
            except n.DeliveryError as e:
                out[name] = str(e)
        server.stop()
        sock2, port2 = bind_unused_port()
        sock2.close()  # nobody listens there
        try:
            await n.post_ingest(f"http://127.0.0.1:{port2}/x/", "t", {"message": "hi"}, 1)
        except n.DeliveryError as e:
            out["refused"] = str(e)
        return out

    out = asyncio.run(run())
    assert seen["ann"] == ("token tok-ann", {"message": "hi"})
    assert "refused the delivery token (HTTP 403)" in out["denied"]
    assert "not installed" in out["missing"]
    assert out["slow"].startswith("Timed out")
    assert "not reachable" in out["refused"]
