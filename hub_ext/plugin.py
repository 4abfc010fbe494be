"""The platform's features wired into the hub: each feature's handlers module.

Each module ends in a ``default_handlers`` list of ``(path, handler)`` pairs
(paths relative to the hub prefix, as JupyterHub's own); ``PlatformAuthenticator.get_handlers``
registers them.
"""

from hub_ext.accounts import handlers as accounts
from hub_ext.activity import handlers as activity
from hub_ext.admin import health_handlers as health
from hub_ext.admin import settings_handlers as settings
from hub_ext.culling import handlers as session
from hub_ext.gpu import handlers as gpu
from hub_ext.notifications import handlers as notifications
from hub_ext.storage import handlers as storage

# Every feature module, in registration order. A new feature adds its module
# here; `setup(app, parent)` (optional) runs first, once, with the hub app.
FEATURES = [session, storage, gpu, activity, accounts, notifications, settings, health]


def platform_handlers(app, parent=None) -> list:
    """Set up every feature and return all their handlers."""
    handlers = []
    for feature in FEATURES:
        setup = getattr(feature, "setup", None)
        if setup is not None:
            setup(app, parent=parent)
        handlers += feature.default_handlers
    return handlers
