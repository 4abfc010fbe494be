"""Admin settings page: every platform variable, its current value and its description.

* ``GET /hub/settings``: the read-only table (templates/settings.html).
* ``GET /hub/api/settings``: the same rows as JSON (``{"settings": [...]}``).

Both need the ``admin-ui`` scope (admins). Values come from ``values_file``
(rendered by the playbook from every variable of group_vars/all.yml, secrets
masked), descriptions from ``docs_file`` (docs/configuration.md, installed by
the playbook): :mod:`hub_ext.admin.settings_table`. Nothing is written here.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers import BaseHandler
from tornado import web
from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from hub_ext.admin import settings_table
from hub_ext.settings import platform_settings
from hub_ext.web.access import require_scope

SETTINGS_KEY = "hub_ext_settings_page"
SCOPE = "admin-ui"


class SettingsPage(LoggingConfigurable):
    values_file = Unicode(
        "/etc/jupyterhub/settings.json",
        help="JSON of every Ansible variable of the platform as last deployed (secrets masked).",
    ).tag(config=True)
    docs_file = Unicode(
        "/usr/local/share/jupyterhub/configuration.md",
        help="docs/configuration.md of the deployed repository: the settings' descriptions.",
    ).tag(config=True)

    def rows(self) -> list[dict[str, str]]:
        """Read both files now (a redeploy changes them without a hub restart)."""
        try:
            with open(self.values_file, encoding="utf-8") as f:
                values = json.load(f)
        except (OSError, ValueError) as e:
            self.log.warning("Settings page: cannot read %s: %s", self.values_file, e)
            values = {}
        if not isinstance(values, dict):
            values = {}
        try:
            with open(self.docs_file, encoding="utf-8") as f:
                docs = settings_table.parse_config_doc(f.read())
        except OSError as e:
            self.log.warning("Settings page: cannot read %s: %s", self.docs_file, e)
            docs = {}
        # the hub's settings as this hub runs them (platform_config.json and
        # any site-local override), not as the last play wrote them
        values.update(settings_table.running_values(self.config, platform_settings()))
        return settings_table.settings_rows(values, docs)


def setup(app, parent=None) -> SettingsPage:
    page = SettingsPage(parent=parent or app)
    if app is not None:
        app.tornado_settings[SETTINGS_KEY] = page
    return page


class SettingsPageHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        require_scope(self, SCOPE, "see the platform settings")
        page: SettingsPage = self.settings[SETTINGS_KEY]
        html = await self.render_template(
            "settings.html",
            rows=page.rows(),
            cell_html=settings_table.markdown_to_html,
            # labs on the hub's origin (jupyterhub_user_subdomains false): warn
            single_origin=not self.settings.get("subdomain_host"),
        )
        self.finish(html)


class SettingsAPIHandler(APIHandler):
    async def get(self):
        require_scope(self, SCOPE, "see the platform settings")
        page: SettingsPage = self.settings[SETTINGS_KEY]
        self.finish({"settings": page.rows()})


default_handlers = [
    (r"/settings", SettingsPageHandler),
    (r"/api/settings", SettingsAPIHandler),
]
