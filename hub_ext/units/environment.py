"""The lab's environment: what every lab finds besides JupyterHub's own variables
(the lab services' switches, TensorFlow's verbosity, the admin's variables, and
the other roles' paths and URLs).

Each setting is declared once, here, tagged with the Ansible variable that sets
it (hub_ext/settings.py). A mixin of PlatformSpawner, whose get_env adds
``platform_variables()`` under the admin's ``environment``.
"""

from __future__ import annotations

import re

from traitlets import Callable, Dict, Enum, HasTraits, TraitError, Unicode, Union, validate

# the lab services' switches (lab/lab_services.py reads them in the lab)
SERVICE_SWITCH = re.compile(r"JUPYTERHUB_SERVICE_[A-Z0-9_]+")
# JupyterHub's own variables of that shape: a switch must not replace them
JUPYTERHUB_SERVICE_VARIABLES = ("JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_SERVICE_URL")


def _switch(default: str, help: str) -> Enum:
    return Enum(["0", "1"], default, help=help)


class LabEnvironmentSettings(HasTraits):
    """What every lab finds in its environment besides JupyterHub's own variables
    (mixed into PlatformSpawner; PlatformSpawner.get_env adds platform_variables)."""

    # Spawner's own option, declared again with the Ansible variable
    environment = Dict(
        value_trait=Union([Unicode(), Callable()]),
        help="""Extra environment variables of every lab (a string each; a site-local
        file may give a callable of the spawner). They win over the platform's own
        (the service switches, the lab icons, the startup scripts path) on a name
        both set.""",
    ).tag(config=True, ansible="jupyterhub_spawner_environment")

    service_mlflow = _switch(
        "1",
        """JUPYTERHUB_SERVICE_MLFLOW of every lab: "1" offers MLflow (tracking UI at
        <lab>/mlflow/, a launcher tile), "0" leaves it out (docs/lab-services.md).""",
    ).tag(config=True, ansible="jupyterhub_service_mlflow")

    service_resources_monitor = _switch(
        "1",
        """JUPYTERHUB_SERVICE_RESOURCES_MONITOR of every lab: "1" offers Glances (at
        <lab>/glances/, a launcher tile), "0" leaves it out (docs/lab-services.md).""",
    ).tag(config=True, ansible="jupyterhub_service_resources_monitor")

    service_tensorboard = _switch(
        "1",
        """JUPYTERHUB_SERVICE_TENSORBOARD of every lab: "1" offers TensorBoard (at
        <lab>/tensorboard/, a launcher tile), "0" leaves it out (docs/lab-services.md).""",
    ).tag(config=True, ansible="jupyterhub_service_tensorboard")

    service_extra = Dict(
        Unicode(),
        help="""More JUPYTERHUB_SERVICE_<NAME> variables of every lab (A-Z, 0-9, _ in
        the name, a single-line string each), e.g. {"JUPYTERHUB_SERVICE_GLANCES": "1"}.""",
    ).tag(config=True, ansible="jupyterhub_service_extra")

    tf_cpp_min_log_level = Enum(
        ["0", "1", "2", "3"],
        "3",
        help="TensorFlow's log verbosity in every lab (TF_CPP_MIN_LOG_LEVEL), 0-3.",
    ).tag(config=True, ansible="jupyterhub_tf_cpp_min_log_level")

    platform_environment = Dict(
        Unicode(),
        help="""Environment of every lab from the platform's other roles, written by
        jupyterhub_config.py: the startup scripts directory and the lab icons'
        URLs (JUPYTERLAB_AUX_SCRIPTS_PATH, JUPYTERLAB_*_ICON_URI).""",
    ).tag(config=True)

    @validate("service_extra")
    def _valid_service_extra(self, proposal):
        for name, value in proposal["value"].items():
            if not SERVICE_SWITCH.fullmatch(name) or name in JUPYTERHUB_SERVICE_VARIABLES:
                raise TraitError(
                    f"service_extra: {name!r} is not a JUPYTERHUB_SERVICE_<NAME> switch "
                    f"(A-Z, 0-9, _; not {' or '.join(JUPYTERHUB_SERVICE_VARIABLES)})"
                )
            if "\n" in value:
                raise TraitError(f"service_extra: the value of {name} must be a single line")
        return proposal["value"]

    def platform_variables(self) -> dict[str, str]:
        """The platform's variables of every lab, before the admin's ``environment``."""
        return {
            "JUPYTERHUB_SERVICE_MLFLOW": self.service_mlflow,
            "JUPYTERHUB_SERVICE_RESOURCES_MONITOR": self.service_resources_monitor,
            "JUPYTERHUB_SERVICE_TENSORBOARD": self.service_tensorboard,
            **self.service_extra,
            "TF_CPP_MIN_LOG_LEVEL": self.tf_cpp_min_log_level,
            **self.platform_environment,
        }
