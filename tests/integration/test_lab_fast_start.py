"""The lab's faster start (lab/lab_server.py, skip_start_costs) against the
lab environment the playbook installs: what it leaves out of a start is really
left out with these versions, and what it defers still works when used.

A JupyterLab or jsonschema upgrade that moves what skip_start_costs relies on
fails here instead of silently giving back the second (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import textwrap

LAB_PYTHON = "/opt/jupyterlab/bin/python"
LAB_LIBRARY = "/usr/local/lib/jupyterhub"

# run as nobody (a lab's user owns nothing of the lab environment either)
PROBE = textwrap.dedent(f"""
    import json, subprocess, sys
    sys.path.insert(0, {LAB_LIBRARY!r})
    import lab_server
    commands = []
    run = subprocess.Popen.__init__
    def spy(self, args, *rest, **kwargs):
        commands.append([str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)])
        return run(self, args, *rest, **kwargs)
    subprocess.Popen.__init__ = spy
    lab_server.skip_start_costs()
    import jupyter_server.serverapp, jupyterlab.labapp, jupyterhub.singleuser.extension
    result = {{"grammar_at_start": "rfc3987_syntax.syntax_helpers" in sys.modules,
               "commands_at_start": commands[:]}}
    import jsonschema
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    result["iri_known"] = "iri" in checker.checkers
    result["iri_good"] = checker.conforms("https://example.org/caf\\u00e9?q=1", "iri")
    result["iri_bad"] = checker.conforms("https://exa mple.org/", "iri")
    result["grammar_after_use"] = "rfc3987_syntax.syntax_helpers" in sys.modules
    from jupyterlab import commands as lab_commands
    result["yarn_config_restored"] = lab_commands._yarn_config.__name__ == "_yarn_config"
    print(json.dumps(result))
""")


def test_lab_start_skips_the_grammar_and_node_and_iri_checks_still_work(host):
    out = host.exec("runuser", "-u", "nobody", "--", "/usr/bin/env", "-i",
                    "PATH=/opt/jupyterlab/bin:/usr/local/bin:/usr/bin:/bin", "HOME=/tmp",
                    LAB_PYTHON, "-c", PROBE, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # node is on the lab's PATH (JupyterLab builds, users' JavaScript), yet no
    # process is started while the lab imports its server
    assert host.exec("test", "-x", "/usr/bin/node", check=False).returncode == 0
    assert result["commands_at_start"] == []
    assert result["grammar_at_start"] is False
    # jsonschema still checks IRIs, with the real grammar, built on first use
    assert result["iri_known"] is True
    assert result["iri_good"] is True
    assert result["iri_bad"] is False
    assert result["grammar_after_use"] is True
    assert result["yarn_config_restored"] is True
