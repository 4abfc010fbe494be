"""The platform's features as the hub serves them: each feature's handlers module.

Each module ends in a ``default_handlers`` list of ``(path, handler)`` pairs
(paths relative to the hub prefix, as JupyterHub's own).
:class:`hub_ext.app.PlatformHub` creates the services the handlers use and
registers these handlers (``init_handlers``).
"""

from hub_ext.accounts import handlers as accounts
from hub_ext.activity import handlers as activity
from hub_ext.admin import health_handlers as health
from hub_ext.admin import settings_handlers as settings
from hub_ext.culling import handlers as session
from hub_ext.gpu import handlers as gpu
from hub_ext.notifications import handlers as notifications
from hub_ext.storage import handlers as storage

# Every feature's handlers module, in registration order. A new feature adds
# its module here (and its service to hub_ext.app.PlatformServices).
FEATURES = [session, storage, gpu, activity, accounts, notifications, settings, health]


def platform_handlers() -> list:
    """Every feature's handlers."""
    handlers = []
    for feature in FEATURES:
        handlers += feature.default_handlers
    return handlers
