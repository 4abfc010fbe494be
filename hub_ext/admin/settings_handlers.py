"""Admin settings page: every platform variable, its current value and its description.

* ``GET /hub/settings``: the read-only table (templates/settings.html).
* ``GET /hub/api/settings``: the same rows as JSON (``{"settings": [...]}``).

Both need the ``admin-ui`` scope (admins). The settings declared as traits
show the running hub's values and the traits' help; the roles' other variables
what the playbook rendered into ``values_file`` (secrets masked, descriptions
from the roles' argument specs): :mod:`hub_ext.admin.settings_table`. Nothing
is written here.
"""

from __future__ import annotations

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers import BaseHandler
from tornado import web

from hub_ext.admin import settings_table
from hub_ext.admin.service import SETTINGS_PAGE_KEY, SettingsPage
from hub_ext.web.access import require_scope

SCOPE = "admin-ui"


class SettingsPageHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        require_scope(self, SCOPE, "see the platform settings")
        page: SettingsPage = self.settings[SETTINGS_PAGE_KEY]
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
        page: SettingsPage = self.settings[SETTINGS_PAGE_KEY]
        self.finish({"settings": page.rows()})


default_handlers = [
    (r"/settings", SettingsPageHandler),
    (r"/api/settings", SettingsAPIHandler),
]
