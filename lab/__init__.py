"""Code that runs inside a user's lab unit, in the lab venv: standard library only.

The playbook installs these files to /usr/local/lib/jupyterhub/ (user_env role);
nothing here may import hub_ext or jupyterhub's hub side.
"""
