"""JupyterHub stand-ins for handler unit tests: fake authentication (a header
names the caller) and the template environment the hub renders pages with."""

from __future__ import annotations

import os
from types import SimpleNamespace

from jupyterhub.scopes import parse_scopes


def scopes_of(user):
    """An admin's scopes, or a plain user's own-server scopes."""
    if user.admin:
        return {"read:servers", "servers", "admin:users", "admin:servers"}
    n = user.name
    return {f"read:servers!user={n}", f"servers!user={n}", f"read:users!user={n}"}


class AuthFromHeader:
    """Mixed in before a handler: the ``X-Test-User`` header picks the caller
    from ``settings["test_users"]``, replacing JupyterHub's authentication and DB."""

    async def prepare(self):
        users = self.settings["test_users"]
        caller = users.get(self.request.headers.get("X-Test-User", ""))
        self._jupyterhub_user = caller
        self.expanded_scopes = scopes_of(caller) if caller else set()
        self.parsed_scopes = parse_scopes(self.expanded_scopes)

    @property
    def db(self):
        users = self.settings["test_users"]
        return SimpleNamespace(
            dirty=[], rollback=lambda: None, query=lambda _: list(users.values())
        )

    def find_user(self, name):
        return self.settings["test_users"].get(name)


def hub_template_env():
    """hub_ext's templates loaded the way JupyterHub loads them (template_paths
    first, JupyterHub's own reachable as ``templates/<name>``)."""
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
    from jupyterhub.app import JupyterHub

    from hub_ext.config import TEMPLATES_DIR

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
