"""JupyterHub extensions for the bare-metal data-science platform.

Pure modules (``accounts``, ``storage``, ``config``, ``units``, ``process``)
import neither tornado nor jupyterhub; ``spawner`` and ``authenticator`` are
the JupyterHub-facing classes built on them.
"""

__version__ = "0.1.0"
