"""JupyterHub request handlers of the platform, one module per feature.

Each module ends in a ``default_handlers`` list of ``(path, handler)`` pairs
(paths relative to the hub prefix, as JupyterHub's own); ``PlatformAuthenticator.get_handlers``
registers them.
"""
