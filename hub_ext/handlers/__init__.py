"""JupyterHub request handlers of the platform, one module per feature.

Each module ends in a ``default_handlers`` list of ``(path, handler)`` pairs
(paths relative to the hub prefix, as JupyterHub's own); ``PlatformAuthenticator.get_handlers``
registers them.
"""

from . import accounts, activity, gpu, health, notifications, session, settings, storage

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
