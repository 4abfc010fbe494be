# Installed by the JupyterHub platform's playbook (role user_env) as the lab
# venv's system-wide /opt/jupyterlab/etc/jupyter/jupyter_server_config.py:
# - jupyter-server-proxy offers the lab services whose JUPYTERHUB_SERVICE_*
#   switch is "1" in the lab's environment (lab/lab_services.py,
#   docs/lab-services.md), and takes writes from the lab's own origin only;
# - kernels listen on unix sockets in the lab unit's private runtime directory,
#   out of other users' labs' reach (lab/lab_kernels.py, docs/security.md).
# A user's own ~/.jupyter configuration loads after it.
import importlib.util
import os
import sys


def _load(name):
    spec = importlib.util.spec_from_file_location(name, f"/usr/local/lib/jupyterhub/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_lab_services = _load("lab_services")
c.ServerProxy.servers = _lab_services.server_proxy_servers(os.environ)  # noqa: F821 (c: traitlets' config)
if c.ServerProxy.servers:  # noqa: F821
    from jupyter_server_proxy.handlers import ProxyHandler

    _lab_services.refuse_cross_origin_writes(ProxyHandler)
# kernels and terminals inherit the lab's environment
os.environ.update(_lab_services.lab_environment(os.environ))

_lab_kernels = _load("lab_kernels")
_kernel_config, _kernel_environment = _lab_kernels.kernel_settings(os.environ)
if _lab_kernels.too_long_warning(os.environ):
    print(_lab_kernels.too_long_warning(os.environ), file=sys.stderr, flush=True)
if _kernel_environment:
    from jupyter_core.paths import jupyter_runtime_dir

    # the server's cookie secret stays where it was, so a lab's cookie outlives
    # a restart of the lab as before (the runtime directory is new each start)
    try:
        os.makedirs(jupyter_runtime_dir(), mode=0o700, exist_ok=True)
    except OSError as _error:  # the server logs that it keeps the secret in memory
        print(f"jupyter_server_config: {_error}", file=sys.stderr, flush=True)
    c.ServerApp.cookie_secret_file = os.path.join(jupyter_runtime_dir(), "jupyter_cookie_secret")  # noqa: F821
for _section, _values in _kernel_config.items():
    c[_section].update(_values)  # noqa: F821
os.environ.update(_kernel_environment)
