"""A real JupyterHub application in the test process, for handler tests.

``RealHub`` is JupyterHub's own ``jupyterhub.tests.mocking.MockHub`` (from the
installed jupyterhub package): its database, roles, scopes, API tokens and
request authentication are the real ones, and the feature's handlers are
registered the way the platform registers them (through the authenticator's
``get_handlers``, below the hub prefix). What is left out: the proxy and the
spawners are never started (a "running" server is a database record, see
``mark_running``), and the hub listens on a loopback port of its own.

Requests authenticate with a real API token (``Authorization: token ...``);
cookie sessions and XSRF are JupyterHub's own code as well, and are attacked
on the test host (tests/integration/test_security_matrix.py).
"""

from __future__ import annotations

import asyncio
import json
import os

from jupyterhub import orm, roles
from jupyterhub.tests.mocking import MockHub, MockPAMAuthenticator
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets import List
from traitlets.config import Config

from .fakes import naive_utc

ADMIN = "boss"  # an admin of the tests' own (MockHub keeps a user "admin" of its own)


def set_running(db, spawner, running: bool, started: float | None = None) -> None:
    """A spawner's database record as the hub keeps it for a running server (a
    server row, started and last activity times) or a stopped one."""
    orm_spawner = spawner.orm_spawner
    if running:
        orm_spawner.server = orm.Server(ip="127.0.0.1", port=1)
        if started is not None:
            orm_spawner.started = orm_spawner.last_activity = naive_utc(started)
    else:
        if orm_spawner.server is not None:
            db.delete(orm_spawner.server)
        orm_spawner.server = None
        orm_spawner.started = None
    db.commit()


class FeatureAuthenticator(MockPAMAuthenticator):
    """JupyterHub's test authenticator plus the feature handlers under test."""

    feature_handlers = List(help="(path, handler) pairs below the hub prefix").tag(config=True)

    def get_handlers(self, app):
        return super().get_handlers(app) + self.feature_handlers


class RealHub:
    """A MockHub serving ``handlers`` (feature paths relative to the hub prefix)."""

    def __init__(self, handlers, tornado_settings: dict | None = None):
        self.loop = asyncio.new_event_loop()
        config = Config()
        config.FeatureAuthenticator.feature_handlers = list(handlers)
        self.app = MockHub.instance(
            config=config,
            authenticator_class=FeatureAuthenticator,
            cookie_secret=os.urandom(32),  # not a jupyterhub_cookie_secret file in the cwd
        )
        self.app.tornado_settings.update(tornado_settings or {})
        self.tokens: dict[str, str] = {}
        self.run(self._start())

    async def _start(self):
        # in the loop: the server and the client attach to the running loop
        await self.app.initialize([])
        sock, port = bind_unused_port()
        self.server = HTTPServer(self.app.tornado_application)
        self.server.add_sockets([sock])
        self.url = f"http://127.0.0.1:{port}{self.app.hub_prefix}"
        self.client = AsyncHTTPClient()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    @property
    def settings(self) -> dict:
        """The running application's tornado settings (what handlers read)."""
        return self.app.tornado_application.settings

    def add_user(self, name: str, admin: bool = False):
        """A hub user with JupyterHub's default roles and an API token (``tokens[name]``)."""
        orm_user = orm.User(name=name, admin=admin)
        self.app.db.add(orm_user)
        self.app.db.commit()
        roles.assign_default_roles(self.app.db, entity=orm_user)
        self.app.db.commit()
        user = self.app.users[orm_user.id]
        self.tokens[name] = user.new_api_token()
        return user

    def user(self, name: str):
        return self.app.users[name]

    def mark_running(self, name: str, started: float) -> None:
        """The user's default server as the hub records a running one (started and
        last activity at ``started``, an epoch), without a process."""
        set_running(self.app.db, self.user(name).spawner, True, started)

    def mark_stopped(self, name: str) -> None:
        set_running(self.app.db, self.user(name).spawner, False)

    def request(self, method: str, path: str, caller: str | None = None, body=None, raw: str | None = None):
        """(status, parsed JSON body) of ``method path`` (below the hub prefix) as
        ``caller`` (a user added here, authenticated by their token; None: anonymous)."""
        headers = {"Content-Type": "application/json"}
        if caller is not None:
            headers["Authorization"] = f"token {self.tokens[caller]}"
        if body is not None:
            raw = json.dumps(body)
        if raw is None and method in ("POST", "PUT", "PATCH"):
            raw = ""

        async def fetch():  # fetch() needs the running loop
            return await self.client.fetch(self.url + path, method=method, headers=headers, body=raw,
                                           allow_nonstandard_methods=True, raise_error=False)

        response = self.run(fetch())
        return response.code, json.loads(response.body or b"null")

    def close(self) -> None:
        self.server.stop()
        self.client.close()
        MockHub.clear_instance()
        self.app.db.close()
        self.app.db_file.close()
        self.loop.close()


def hub_template_env():
    """hub_ext's templates loaded the way JupyterHub loads them (template_paths
    first, JupyterHub's own reachable as ``templates/<name>``)."""
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
    from jupyterhub.app import JupyterHub

    from hub_ext.app import TEMPLATES_DIR

    base = os.path.join(JupyterHub().data_files_path, "templates")
    return Environment(
        loader=ChoiceLoader(
            [
                PrefixLoader({"templates": FileSystemLoader([base])}, "/"),
                FileSystemLoader([TEMPLATES_DIR, base]),
            ]
        ),
        autoescape=True,
    )
