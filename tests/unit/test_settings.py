"""One declaration per setting: the traits tagged with their Ansible variable
(hub_ext/settings.py) against every other view of the same setting.

* the hub role's platform_config.json.j2 maps exactly the tagged traits, each
  from its own variable (rendered with Ansible's own templating);
* each variable's Ansible default is the trait's default;
* docs/configuration.md has a row per variable, with that default and the
  trait's bounds;
* every role argument spec that names a variable gives it a type that fits the trait;
* a bad value is refused naming the variable and Class.trait (deploy and hub start).
"""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml
from jupyterhub.traitlets import ByteSpecification
from traitlets import Bool, Dict, Enum, Float, Integer, List, TraitError, Unicode

from hub_ext import settings as st

from .docs_table import doc_rows
from .rendering import ANSIBLE, ansible_defaults, render_platform_config

SETTINGS = st.platform_settings()
BY_VARIABLE: dict[str, list[st.Setting]] = {}
for _s in SETTINGS:
    BY_VARIABLE.setdefault(_s.variable, []).append(_s)


def render(variables: dict) -> dict:
    return render_platform_config(variables)


@pytest.fixture(scope="module")
def defaults() -> dict:
    return ansible_defaults()


@pytest.fixture(scope="module")
def rendered(defaults) -> dict:
    return render(defaults)


def test_settings_are_found():
    assert {"jupyterhub_spawner_ready_poll_interval", "jupyterhub_spawner_mem_limit"} <= set(BY_VARIABLE)
    for setting in SETTINGS:
        # the platform's prefixes, and the slurm role's for the cluster's spawner
        assert setting.variable.startswith(("jupyterhub_", "jupyterlab_", "slurm_")), setting
        assert setting.help, f"{setting.key} has no help="


def test_tagged_traits_have_static_defaults():
    # a @default method would be a second declaration the tests below cannot see
    for setting in SETTINGS:
        generators = getattr(setting.owner, "_trait_default_generators", {})
        assert setting.name not in generators, f"{setting.key} has a @default method"


def test_template_maps_exactly_the_tagged_traits(rendered):
    rendered_keys = {(section, name) for section, values in rendered.items() for name in values}
    tagged_keys = {(s.section, s.name) for s in SETTINGS}
    assert rendered_keys == tagged_keys


def test_template_renders_the_sample_the_unit_tests_use(rendered, platform_config):
    assert rendered == platform_config


def changed_value(setting: st.Setting, default):
    """A value of the trait's type that differs from the default."""
    trait = setting.trait
    if isinstance(trait, Bool):
        return not default
    if isinstance(trait, Enum):
        return next(value for value in trait.values if value != default)
    if isinstance(trait, ByteSpecification):  # an Integer that takes "4G"
        return "8G"
    if isinstance(trait, Integer):
        low, high = setting.bounds
        return default + 1 if high is None or default < high else default - 1
    if isinstance(trait, Float):
        low, high = setting.bounds
        return default / 2 if default and (low is None or default / 2 >= low) else (default or 0) + 1
    if isinstance(trait, Dict):
        return {"CHANGED": "yes"}
    if isinstance(trait, List):
        return ["/changed"]
    return "/changed-{USERNAME}.slice" if default is None else f"{default}x"


@pytest.mark.parametrize("variable", sorted(BY_VARIABLE))
def test_each_variable_reaches_its_traits_and_nothing_else(defaults, rendered, variable):
    first = BY_VARIABLE[variable][0]
    value = changed_value(first, defaults[variable])
    changed = render({**defaults, variable: value})
    for setting in BY_VARIABLE[variable]:
        assert changed[setting.section][setting.name] == value, setting.key
        changed[setting.section][setting.name] = rendered[setting.section][setting.name]
    assert changed == rendered  # no other trait moved


@pytest.mark.parametrize("variable", sorted(BY_VARIABLE))
def test_ansible_default_is_the_trait_default(rendered, variable):
    for setting in BY_VARIABLE[variable]:
        assert setting.check(rendered[setting.section][setting.name]) == setting.default, setting.key


def test_defaults_pass_the_deploy_check(rendered, tmp_path):
    path = tmp_path / "platform_config.json"
    path.write_text(json.dumps(rendered))
    assert st.main(["check", str(path)]) == 0


@pytest.mark.parametrize("variable,value,message", [
    ("jupyterhub_spawner_mem_limit", "-1G", "must be positive"),
    ("jupyterhub_spawner_mem_limit", "4GB", "not a valid memory specification"),
    ("jupyterhub_spawner_cpu_limit", -2, "should not be less than 0.01"),
    ("jupyterhub_spawner_ready_poll_interval", 10, "should not be greater than 5"),
    ("jupyterhub_spawner_ready_poll_interval", 0, "should not be less than 0.01"),
    ("jupyterhub_spawner_start_timeout", 0, "should not be less than 1"),
    ("jupyterhub_spawner_tmp_size", "1.5G", "tmp_size must be a positive whole number"),
    ("jupyterhub_spawner_shm_size", "64M,exec", "shm_size must be a positive whole number"),
    ("jupyterhub_spawner_dynamic_users", True, "dynamic_users is not supported"),
    ("jupyterhub_spawner_unit_name_template", "jupyter-lab", "must contain {USERNAME}"),
    ("jupyterhub_spawner_unit_name_template", "lab {USERNAME}", "otherwise only"),
    # 15 + 29 + 11 = 55 characters with a hub name at its longest
    ("jupyterhub_spawner_unit_name_template", "jupyterhub-lab-{USERNAME}-singleuser", "can make unit names of 55"),
    ("jupyterhub_spawner_slice", "users", "must be a unit name ending in .slice"),
    ("jupyterhub_spawner_default_shell", "bash", "absolute paths"),
    ("jupyterhub_spawner_readonly_paths", ["data"], "absolute paths"),
    ("jupyterhub_spawner_extra_paths", "/opt/bin", "expected a list"),
    ("jupyterhub_spawner_unit_extra_properties", {"X": 1}, "must be a unicode string or a list"),
    ("jupyterhub_resource_profiles", {"big": {}}, "big must be an object with mem_limit and/or cpu_limit"),
    ("jupyterhub_resource_profiles", {"big": {"cpu_limit": 0}}, "big.cpu_limit must be a positive number"),
    ("jupyterhub_resource_profiles", {"big": {"gpus": 1}}, "big.gpus is not a profile key"),
    ("jupyterhub_admin", "Admin", "admin_user 'Admin' is invalid"),
    ("jupyterhub_admin", "x" * 29 + "-too-long", "admin_user"),
    ("jupyterhub_unix_username_template", "jh-user", "unix_username_template is invalid"),
    ("jupyterhub_allowed_failed_logins", -1, "should not be less than 0"),
    ("jupyterhub_minimum_password_length", 0, "should not be less than 1"),
    ("jupyterhub_password_words", 2, "should not be less than 3"),
    ("jupyterhub_password_words", 11, "should not be greater than 10"),
    ("jupyterhub_password_delimiter", " ", "the password delimiter must be 1-3 characters"),
    ("jupyterhub_signup_max_pending", -1, "should not be less than 0"),
    ("jupyterhub_idle_culler_timeout", 0, "should not be less than 1"),
    ("jupyterhub_idle_culler_interval", 0, "should not be less than 1"),
    ("jupyterhub_idle_culler_max_age", -1, "should not be less than 0"),
    ("jupyterhub_idle_culler_max_extension", 8761, "should not be greater than 8760"),
    ("jupyterhub_storage_trash_retention_days", 0, "should not be less than 1"),
    ("jupyterhub_storage_deleted_user_retention_days", 0, "should not be less than 1"),
    ("jupyterhub_storage_sizes_interval", 0, "should not be less than 1"),
    ("jupyterhub_storage_quota_per_user", "512K", "quota_per_user: at least 1M"),
    ("jupyterhub_storage_quota_per_user", "10 GB", "not a valid memory specification"),
    ("jupyterhub_storage_quota_shared", "100K", "quota_shared: at least 1M"),
    ("jupyterhub_volume_descriptions", {"shared": "x"}, "'shared' is not a per-user volume"),
    ("jupyterhub_volume_descriptions", {"home": ["x"]}, "volume_descriptions"),
    ("jupyterhub_activitymon_sample_interval", 0, "should not be less than 1"),
    ("jupyterhub_activitymon_sample_interval", 86401, "should not be greater than 86400"),
    ("jupyterhub_activitymon_retention_days", 366, "should not be greater than 365"),
    ("jupyterhub_activitymon_half_life", 169, "should not be greater than 168"),
    ("jupyterhub_activitymon_inactive_after", 0, "should not be less than 1"),
    ("jupyterhub_gpu_enabled", 3, "expected any of [0, 1, 2]"),
    ("jupyterhub_gpu_policy", "random", "expected any of ['all'"),
    ("jupyterhub_gpu_group_devices", {"ml": []}, "group_devices"),
    ("jupyterhub_gpu_group_devices", {"ml": [-1]}, "group_devices"),
    ("jupyterhub_gpu_group_counts", {"ml": 0}, "group_counts"),
    ("jupyterhub_spawner_environment", {"A": 1}, "must be a unicode string or a callable"),
    ("jupyterhub_service_mlflow", "yes", "expected any of ['0', '1']"),
    ("jupyterhub_service_tensorboard", "true", "expected any of ['0', '1']"),
    ("jupyterhub_service_resources_monitor", "2", "expected any of ['0', '1']"),
    ("jupyterhub_service_extra", {"PATH": "/x"}, "'PATH' is not a JUPYTERHUB_SERVICE_<NAME> switch"),
    ("jupyterhub_service_extra", {"JUPYTERHUB_SERVICE_URL": "x"}, "is not a JUPYTERHUB_SERVICE_<NAME>"),
    ("jupyterhub_service_extra", {"JUPYTERHUB_SERVICE_X": "a\nb"}, "must be a single line"),
    ("jupyterhub_tf_cpp_min_log_level", "4", "expected any of ['0', '1', '2', '3']"),
])
def test_bad_value_is_refused_naming_the_variable(defaults, variable, value, message, tmp_path, capsys):
    config = render({**defaults, variable: value})
    path = tmp_path / "platform_config.json"
    path.write_text(json.dumps(config))
    # at deploy: the template's validate command
    assert st.main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    setting = BY_VARIABLE[variable][0]
    assert err.startswith(f"{variable} ({setting.key}): ") and message in err, err
    # at hub start: the trait itself refuses the same value (TraitError)
    with pytest.raises(TraitError, match=re.escape(message)):
        setting.check(config[setting.section][setting.name])


@pytest.mark.parametrize("changes, message", [
    ({"jupyterhub_gpu_policy": "group"}, "jupyterhub_gpu_group_devices"),
    ({"jupyterhub_gpu_enabled": 1, "jupyterhub_spawner_isolate_devices": True},
     "jupyterhub_spawner_isolate_devices"),
])
def test_bad_combinations_are_refused_at_deploy(defaults, changes, message, tmp_path, capsys):
    path = tmp_path / "platform_config.json"
    path.write_text(json.dumps(render({**defaults, **changes})))
    assert st.main(["check", str(path)]) == 1
    assert message in capsys.readouterr().err


def test_the_check_command_reports_unreadable_files(tmp_path, capsys):
    path = tmp_path / "platform_config.json"
    path.write_text("{not json")
    assert st.main(["check", str(path)]) == 1
    assert str(path) in capsys.readouterr().err
    assert st.main(["verify"]) == 2


# --- docs/configuration.md ---------------------------------------------------------


def doc_default(value) -> str:
    """A default as the reference's table writes it."""
    if isinstance(value, str):
        # quoted where YAML would read the bare word as another type ("1", "")
        as_yaml = yaml.safe_load(value) if value else None
        return f"`{json.dumps(value)}`" if as_yaml is None or isinstance(as_yaml, int | float) else f"`{value}`"
    return f"`{json.dumps(value)}`"


@pytest.mark.parametrize("variable", sorted(BY_VARIABLE))
def test_configuration_reference_has_the_default_and_bounds(rendered, variable):
    rows = doc_rows()
    assert variable in rows, f"docs/configuration.md has no row for {variable}"
    _, default_cell, effect, _ = rows[variable][:4]
    setting = BY_VARIABLE[variable][0]
    assert default_cell == doc_default(rendered[setting.section][setting.name]), variable
    low, high = setting.bounds
    if low is not None and high is not None:
        assert f"{low:g}-{high:g}" in effect, f"{variable}: the row must say {low:g}-{high:g}"
    elif low is not None:
        assert f"≥ {low:g}" in effect, f"{variable}: the row must say ≥ {low:g}"


# --- the roles' argument specs ------------------------------------------------------

# ByteSpecification first: an Integer subclass that also takes "4G" (a string in Ansible)
SPEC_TYPES = {ByteSpecification: {"str", "raw"}, Bool: {"bool"}, Integer: {"int"},
              Float: {"float"}, Unicode: {"str", "path"}, List: {"list"}, Dict: {"dict"}}
SPEC_TYPE_OF_VALUE = {int: "int", str: "str"}


def argument_spec_options() -> dict[str, dict]:
    options = {}
    for path in sorted(ANSIBLE.glob("roles/*/meta/argument_specs.yml")):
        for entry in (yaml.safe_load(path.read_text())["argument_specs"] or {}).values():
            options.update(entry.get("options") or {})
    return options


def test_argument_specs_fit_the_traits():
    options = argument_spec_options()
    if not options:
        pytest.skip("no role has meta/argument_specs.yml yet: nothing to hold to the traits")
    for variable, settings in BY_VARIABLE.items():
        assert variable in options, f"no role's argument spec declares {variable}"
        trait = settings[0].trait
        if isinstance(trait, Enum):  # the spec's type is that of the values
            expected = {SPEC_TYPE_OF_VALUE[type(value)] for value in trait.values}
        else:
            expected = next((types for cls, types in SPEC_TYPES.items() if isinstance(trait, cls)), None)
        assert expected is not None, f"{variable}: no Ansible type for {type(trait).__name__}"
        assert options[variable].get("type", "str") in expected | {"raw"}, variable


def test_bounds_are_finite_numbers():
    for setting in SETTINGS:
        for bound in setting.bounds:
            assert bound is None or math.isfinite(bound), setting.key
