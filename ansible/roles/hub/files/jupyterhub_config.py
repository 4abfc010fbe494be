# JupyterHub configuration of the platform. Installed as /etc/jupyterhub/jupyterhub_config.py.
#
# Static on purpose: every knob lives in platform.json (rendered by Ansible from
# group_vars); site-local overrides go in jupyterhub_config.d/*.py, loaded last.
import os
from pathlib import Path

from hub_ext.config import apply_platform_settings, load_settings

c = get_config()  # noqa: F821 (provided by traitlets when loading this file)

settings = load_settings(
    os.environ.get("JUPYTERHUB_PLATFORM_CONFIG", "/etc/jupyterhub/platform.json")
)
settings = apply_platform_settings(c, settings)

if settings["config_d"]:
    for path in sorted(Path(settings["config_d"]).glob("*.py")):
        load_subconfig(str(path))  # noqa: F821
