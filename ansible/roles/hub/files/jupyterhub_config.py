# JupyterHub configuration of the platform. Installed as /etc/jupyterhub/jupyterhub_config.py.
#
# Static on purpose: every knob is an Ansible variable, rendered into
# platform_config.json (traitlets' own shape, merged as is: hub_ext/settings.py)
# and platform.json (the settings not yet declared as traits, mapped by
# hub_ext/config.py); site-local overrides go in jupyterhub_config.d/*.py, loaded last.
import os
from pathlib import Path

from hub_ext import settings as platform_settings
from hub_ext.config import apply_platform_settings, load_settings

c = get_config()  # noqa: F821 (provided by traitlets when loading this file)

settings = load_settings(
    os.environ.get("JUPYTERHUB_PLATFORM_CONFIG", "/etc/jupyterhub/platform.json")
)
settings = apply_platform_settings(c, settings)
platform_settings.merge_config_file(
    c, os.environ.get("JUPYTERHUB_PLATFORM_SETTINGS", platform_settings.PLATFORM_CONFIG_FILE)
)

if settings["config_d"]:
    for path in sorted(Path(settings["config_d"]).glob("*.py")):
        load_subconfig(str(path))  # noqa: F821
platform_settings.check_combinations(c)
