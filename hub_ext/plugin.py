"""The platform's features wired into the hub: each feature's service and handlers modules.

Each handlers module ends in a ``default_handlers`` list of ``(path, handler)``
pairs (paths relative to the hub prefix, as JupyterHub's own); each service
module has ``setup(app, parent)``, which creates the feature's long-lived
object, hands it to the handlers through the hub's tornado settings and starts
what runs in the background. ``PlatformAuthenticator.get_handlers`` runs both.
"""

from hub_ext.accounts import handlers as accounts
from hub_ext.activity import handlers as activity
from hub_ext.activity import service as activity_service
from hub_ext.admin import health_handlers as health
from hub_ext.admin import service as admin_service
from hub_ext.admin import settings_handlers as settings
from hub_ext.culling import handlers as session
from hub_ext.culling import service as culling_service
from hub_ext.gpu import handlers as gpu
from hub_ext.gpu import service as gpu_service
from hub_ext.notifications import handlers as notifications
from hub_ext.notifications import service as notifications_service
from hub_ext.storage import handlers as storage
from hub_ext.storage import service as storage_service

# Every feature's handlers module, in registration order. A new feature adds
# its module here.
FEATURES = [session, storage, gpu, activity, accounts, notifications, settings, health]

# Every feature's service module, in setup order (activity reads the GPU
# service and the storage sizes).
SERVICES = [
    culling_service, storage_service, gpu_service, activity_service,
    notifications_service, admin_service,
]


def platform_handlers(app, parent=None) -> list:
    """Set up every service and return all the features' handlers."""
    for service in SERVICES:
        service.setup(app, parent=parent)
    handlers = []
    for feature in FEATURES:
        handlers += feature.default_handlers
    return handlers
