"""platform.json's lab_start, lab_environment and branding objects (hub_ext.config)."""

import pytest
from traitlets.config import Config

from hub_ext.config import PlatformSettingsError, apply_platform_settings, validate_settings

FEATURES = {
    "lab_start": {"launcher": "/usr/local/lib/jupyterhub/lab_start.py",
                  "aux_scripts_path": "/etc/jupyterhub/start-platform.d",
                  "server": "/usr/local/lib/jupyterhub/lab_server.py"},
    "lab_environment": {"JUPYTERHUB_SERVICE_MLFLOW": "1", "JUPYTERHUB_SERVICE_TENSORBOARD": "0",
                        "TF_CPP_MIN_LOG_LEVEL": "3"},
    "branding": {"logo_file": "/usr/local/share/jupyterhub/branding/logo.svg",
                 "lab_main_icon_uri": "/jupyterhub/branding/lab-main-icon.svg",
                 "lab_splash_icon_uri": "https://example.org/splash.png"},
}


def test_features_reach_the_spawner_and_the_hub(settings):
    settings.update(FEATURES)
    settings["spawner"]["environment"] = {"JUPYTERHUB_SERVICE_TENSORBOARD": "1", "FOO": "bar"}
    c = Config()
    apply_platform_settings(c, settings)
    assert c.PlatformSpawner.environment == {
        "JUPYTERHUB_SERVICE_MLFLOW": "1",
        "JUPYTERHUB_SERVICE_TENSORBOARD": "1",  # the admin's spawner environment wins
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "JUPYTERLAB_AUX_SCRIPTS_PATH": "/etc/jupyterhub/start-platform.d",
        "JUPYTERLAB_MAIN_ICON_URI": "/jupyterhub/branding/lab-main-icon.svg",
        "JUPYTERLAB_SPLASH_ICON_URI": "https://example.org/splash.png",
        "FOO": "bar",
    }
    assert c.PlatformSpawner.cmd == [
        "/opt/jupyterlab/bin/python", "-I", "/usr/local/lib/jupyterhub/lab_start.py", "--",
        "/opt/jupyterlab/bin/python", "/usr/local/lib/jupyterhub/lab_server.py"]
    assert c.JupyterHub.logo_file == "/usr/local/share/jupyterhub/branding/logo.svg"


def test_without_the_objects_nothing_changes(settings):
    c = Config()
    s = apply_platform_settings(c, settings)
    assert c.PlatformSpawner.cmd == ["/opt/jupyterlab/bin/jupyterhub-singleuser"]
    assert c.PlatformSpawner.environment == {}
    assert "logo_file" not in c.JupyterHub
    assert s["lab_start"] == {"launcher": None, "aux_scripts_path": None, "server": None}


@pytest.mark.parametrize("key, value, message", [
    ("lab_environment", {"PATH": "/x"}, "lab_environment.PATH is not a passthrough variable"),
    ("lab_environment", {"JUPYTERHUB_SERVICE_X": 1}, "lab_environment must be an object of string"),
    ("lab_start", {"launcher": "relative.py"}, "lab_start.launcher must be an absolute path"),
    ("lab_start", {"server": "lab_server.py"}, "lab_start.server must be an absolute path"),
    ("lab_start", {"other": 1}, "lab_start.other is not a known lab start option"),
    ("lab_start", [], "lab_start must be a JSON object"),
    ("branding", {"lab_main_icon_uri": "javascript:alert(1)"}, "branding.lab_main_icon_uri must be"),
    ("branding", {"lab_main_icon_uri": '/x" onload="y'}, "branding.lab_main_icon_uri must be"),
    ("branding", {"logo_file": "logo.svg"}, "branding.logo_file must be an absolute path"),
])
def test_bad_values_name_the_key(settings, key, value, message):
    settings[key] = value
    with pytest.raises(PlatformSettingsError, match=message.replace(".", r"\.")):
        validate_settings(settings)
