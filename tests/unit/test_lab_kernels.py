"""lab.lab_kernels: a lab's kernels on unix sockets in the lab unit's private
runtime directory (the attack from another lab: tests/integration/test_kernel_isolation.py)."""

from lab import lab_kernels


def test_kernels_use_ipc_in_the_units_runtime_directory():
    config, environment = lab_kernels.kernel_settings({"RUNTIME_DIRECTORY": "/run/jupyter-ann-singleuser"})
    assert config == {"KernelManager": {"transport": "ipc"}}
    assert environment == {"JUPYTER_RUNTIME_DIR": "/run/jupyter-ann-singleuser"}


def test_the_first_of_several_runtime_directories_is_the_units_own():
    assert lab_kernels.private_runtime_dir({"RUNTIME_DIRECTORY": "/run/a:/run/b"}) == "/run/a"


def test_nothing_changes_outside_a_lab_unit():
    assert lab_kernels.kernel_settings({}) == ({}, {})
    assert lab_kernels.kernel_settings({"RUNTIME_DIRECTORY": "relative"}) == ({}, {})


def test_the_longest_kernel_socket_path_fits_a_unix_socket_address():
    # the default unit name with the longest hub name a unix account allows (29)
    longest_default = "/run/jupyter-" + "n" * 29 + "-singleuser"
    assert lab_kernels.private_runtime_dir({"RUNTIME_DIRECTORY": longest_default}) == longest_default
    socket_path = f"{longest_default}/kernel-{'0' * 36}-ipc-10"
    assert len(socket_path) <= lab_kernels.UNIX_SOCKET_PATH_MAX
    too_long = {"RUNTIME_DIRECTORY": "/run/" + "x" * 60}
    assert lab_kernels.private_runtime_dir(too_long) is None
    # said in the lab's journal
    assert "too long" in lab_kernels.too_long_warning(too_long)
    assert lab_kernels.too_long_warning({"RUNTIME_DIRECTORY": longest_default}) is None
    assert lab_kernels.too_long_warning({}) is None


def test_the_hubs_unit_name_bound_is_the_longest_runtime_directory_kernels_fit_in():
    # the hub refuses unit_name_template values that could pass this bound
    # (hub_ext/units/settings.py): a lab never falls back to TCP kernels
    from hub_ext.units.settings import UNIT_NAME_MAX_LENGTH

    def fits(unit: str) -> bool:
        return lab_kernels.private_runtime_dir({"RUNTIME_DIRECTORY": f"/run/{unit}"}) is not None

    assert fits("u" * UNIT_NAME_MAX_LENGTH)
    assert not fits("u" * (UNIT_NAME_MAX_LENGTH + 1))
