"""What a user finds in a lab's terminal and kernels: the lab's python, pip and
jupyter first on PATH, and packages they install with pip landing in their own
home (~/.local, persistent) and importable from a new kernel.

The package is a wheel the lab builds itself (no package index needed).
"""

from __future__ import annotations

import textwrap

import pytest

from hubclient import lab_cell, lab_shell, unique_names

LAB_BIN = "/opt/jupyterlab/bin"
SITE = ".local/lib/python3.11/site-packages"

BUILD_WHEEL = textwrap.dedent("""
    import base64, hashlib, os, zipfile
    name, version = "platformprobe", "1.0"
    files = {
        f"{name}/__init__.py": "VALUE = 'installed by the user'\\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n",
        f"{name}-{version}.dist-info/WHEEL":
            "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    def digest(text):
        raw = hashlib.sha256(text.encode()).digest()
        return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    record = "".join(f"{path},{digest(text)},{len(text.encode())}\\n" for path, text in files.items())
    files[f"{name}-{version}.dist-info/RECORD"] = record + f"{name}-{version}.dist-info/RECORD,,\\n"
    path = os.path.expanduser(f"~/{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
    print("built", path)
""")


@pytest.fixture(scope="module")
def user(admin):
    name, = unique_names(1, "env")
    assert admin.api("POST", f"users/{name}").status_code == 201
    admin.start_server(name)
    yield name
    admin.stop_server(name)
    admin.api("DELETE", f"users/{name}")


def test_terminal_finds_the_labs_python_pip_and_jupyter_first(admin, user):
    out, status = lab_shell(admin, user, "command -v python python3 pip jupyter")
    assert status == 0, out
    found = [line.strip() for line in out.splitlines() if line.strip().startswith("/")]
    assert found[-4:] == [f"{LAB_BIN}/{tool}" for tool in ("python", "python3", "pip", "jupyter")], out


def test_pip_installs_into_the_users_home_and_a_new_kernel_imports_it(host, admin, user):
    out, status = lab_cell(admin, user, BUILD_WHEEL)
    assert status == "ok", out
    out, status = lab_shell(
        admin, user, "pip install --no-index --no-deps ~/platformprobe-1.0-py3-none-any.whl", timeout=180
    )
    assert status == 0, out
    assert "Defaulting to user installation" in out, out
    assert "Successfully installed platformprobe-1.0" in out, out

    out, status = lab_cell(admin, user, "import platformprobe; print(platformprobe.__file__, platformprobe.VALUE)")
    assert status == "ok", out
    assert f"/home/jh-{user}/{SITE}/platformprobe/__init__.py installed by the user" in out, out
    # on the host it sits in the user's own home directory, owned by the user
    owner = host.exec(
        "stat", "-c", "%U", f"/srv/jupyterhub/users/jh-{user}/home/{SITE}/platformprobe/__init__.py"
    ).stdout.strip()
    assert owner == f"jh-{user}"
    # the lab environment itself is untouched (root's, read-only to users)
    assert host.exec("test", "-e", "/opt/jupyterlab/lib/python3.11/site-packages/platformprobe",
                     check=False).returncode != 0
