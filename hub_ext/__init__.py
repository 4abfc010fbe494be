"""JupyterHub extensions for the bare-metal data-science platform.

One package per feature (accounts, units, storage, culling, activity, gpu,
notifications, admin): pure logic modules, a ``service`` module with the
feature's long-lived object and a ``handlers`` module with the HTTP code.
``app`` is the hub with the features wired in (``platform-hub``), ``plugin``
lists the features' handlers, ``periodic`` runs the background work, ``web``
is what the handlers share, ``spawner`` and ``authenticator`` are the
JupyterHub-facing classes. The module map: docs/architecture.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # the installed wheel's version, which setuptools-scm took from git
    __version__ = version("hub_ext")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"
