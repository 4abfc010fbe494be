"""The admin pages' long-lived objects: the health endpoint's rate limiter and
the settings page's sources (``c.HealthEndpoint.*``, ``c.SettingsPage.*``).

Nothing runs in the background; the HTTP side is
:mod:`hub_ext.admin.health_handlers` and :mod:`hub_ext.admin.settings_handlers`.
"""

from __future__ import annotations

import json
import time

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from hub_ext.admin import health, settings_table
from hub_ext.settings import platform_settings

HEALTH_KEY = "hub_ext_health"  # tornado settings keys the handlers read
SETTINGS_PAGE_KEY = "hub_ext_settings_page"


class HealthEndpoint(LoggingConfigurable):
    min_interval = Float(
        1.0, help="Seconds between two answered health requests from one client address."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.started = time.time()
        self.limiter = health.RateLimiter(self.min_interval)


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
