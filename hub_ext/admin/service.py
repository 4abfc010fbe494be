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
        help="""JSON the playbook renders at every deploy: each variable of the roles'
        defaults with its value (secrets masked), role default, description (the
        role's argument spec) and the Docker original's name.""",
    ).tag(config=True)

    def rows(self) -> list[dict[str, str]]:
        """Read the file now (a redeploy changes it without a hub restart); the
        tagged settings as this hub runs them (hub_ext.admin.settings_table)."""
        try:
            with open(self.values_file, encoding="utf-8") as f:
                deployed = json.load(f)
        except (OSError, ValueError) as e:
            self.log.warning("Settings page: cannot read %s: %s", self.values_file, e)
            deployed = {}
        if not isinstance(deployed, dict):
            deployed = {}
        return settings_table.settings_rows(deployed, platform_settings(), self.config)
