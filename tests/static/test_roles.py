"""The Ansible roles stand alone: each owns its knobs (defaults/main.yml), declares
them in meta/argument_specs.yml (Ansible checks them when the role starts), and
reads its templates and files from inside itself."""

import re

import pytest
import yaml

from ansible_roles import ROLES, argument_spec, role_defaults, role_names

# A default of this Python type needs this argument spec type (None: nullable knob).
SPEC_TYPE = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
NULLABLE_TYPES = {"str", "float", "list"}


def test_the_roles_are_found():
    assert {"base", "hub", "nginx", "proxy", "storage", "user_env", "gpu", "branding"} <= set(role_names())


@pytest.mark.parametrize("role", role_names())
def test_argument_spec_covers_exactly_the_roles_defaults(role):
    defaults, spec = role_defaults(role), argument_spec(role)
    assert sorted(spec) == sorted(defaults), f"{role}: meta/argument_specs.yml and defaults/main.yml differ"
    for name, default in defaults.items():
        option = spec[name]
        assert option.get("description"), f"{name}: no description"
        if default is None:
            assert option["type"] in NULLABLE_TYPES, f"{name}: null default, type {option['type']}"
        else:
            assert option["type"] == SPEC_TYPE[type(default)], f"{name}: {default!r} is not {option['type']}"
        if "choices" in option and default is not None:
            assert default in option["choices"], f"{name}: default {default!r} not among its choices"
        if option["type"] == "list":
            assert option.get("elements"), f"{name}: list without an element type"


def test_each_variable_has_one_owner_role():
    owners: dict[str, list[str]] = {}
    for role in role_names():
        for name in role_defaults(role):
            owners.setdefault(name, []).append(role)
    assert {n: r for n, r in owners.items() if len(r) > 1} == {}


def test_group_vars_set_nothing():
    # the site's override file ships empty; every default lives in its role
    assert yaml.safe_load((ROLES.parent / "group_vars" / "all.yml").read_text()) is None


@pytest.mark.parametrize("role", role_names())
def test_a_role_reads_only_its_own_files(role):
    """Outside the roles only the checkout's Python code is read: the hub_ext
    wheel is built from the checkout, lab/ is copied from it."""
    allowed = {"", "/lab/"}
    for path in sorted((ROLES / role).rglob("*")):
        if path.suffix not in {".yml", ".j2"}:
            continue
        for use in re.findall(r"jupyterhub_repo_root\s*}}([^\"'\s{]*)", path.read_text()):
            assert use in allowed, f"{path.relative_to(ROLES)} reads {use} from the checkout"


@pytest.mark.parametrize("role", role_names())
def test_every_role_checks_its_own_variables_first(role):
    tasks = yaml.safe_load((ROLES / role / "tasks" / "main.yml").read_text())
    assert tasks[0].get("ansible.builtin.import_tasks") == "validate.yml", f"{role}: tasks/main.yml"
    assert (ROLES / role / "tasks" / "validate.yml").is_file()


def section_intros(role: str) -> list[str]:
    """The comment paragraphs of the role's defaults/main.yml that belong to no
    variable: after a ``# ---`` section header, parted by a blank line from the
    variable below (the header line itself left out)."""
    intros, block = [], []
    for line in (ROLES / role / "defaults" / "main.yml").read_text().splitlines():
        if line.startswith("#") and not line.startswith("# ---"):
            block.append(line.lstrip("#").strip())
        elif not line.strip() and block:
            intros.append(" ".join(" ".join(block).split()))
            block = []
        else:
            block = []
    return intros


@pytest.mark.parametrize("role", role_names())
def test_no_variable_description_carries_a_section_intro(role):
    """A section's intro says something of the whole section: it goes into the
    entry point's description, never into the description of the section's first
    variable (where a comment copied whole from above the variable put it)."""
    intros = section_intros(role)
    for name, option in argument_spec(role).items():
        description = option.get("description", "")
        if isinstance(description, list):  # Ansible takes a list of paragraphs too
            description = " ".join(description)
        description = " ".join(description.split())
        leaked = [intro for intro in intros if intro in description]
        assert not leaked, f"{role}: {name}'s description carries the section intro {leaked[0]!r}"
