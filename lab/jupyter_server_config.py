# Installed by the JupyterHub platform's playbook (role user_env) as the lab
# venv's system-wide /opt/jupyterlab/etc/jupyter/jupyter_server_config.py:
# jupyter-server-proxy offers the lab services whose JUPYTERHUB_SERVICE_*
# switch is "1" in the lab's environment (lab/lab_services.py,
# docs/lab-services.md). A user's own ~/.jupyter configuration loads after it.
import importlib.util
import os
import sys

_spec = importlib.util.spec_from_file_location(
    "lab_services", "/usr/local/lib/jupyterhub/lab_services.py")
_lab_services = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _lab_services  # its dataclasses look their module up there
_spec.loader.exec_module(_lab_services)
c.ServerProxy.servers = _lab_services.server_proxy_servers(os.environ)  # noqa: F821 (c: traitlets' config)
# kernels and terminals inherit the lab's environment
os.environ.update(_lab_services.lab_environment(os.environ))
