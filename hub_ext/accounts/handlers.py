"""Accounts: batch user creation, password reset, the safe authorization page.

Pages (admin only, ``admin:users`` held unfiltered):

* ``GET  /hub/platform/users``: create users in batches, reset passwords; the
  generated passwords appear once in a credentials modal (copy per row, copy
  all, download as text). Nothing keeps them: only the bcrypt hash is stored.
* ``GET  /hub/authorize``: signups and their state; Approve / Unauthorize /
  Discard are POST forms with ``_xsrf``. Only a pending signup (not
  authorized, no hub user) can be discarded. Replaces NativeAuthenticator's
  page, whose links changed state on GET.
* ``POST /hub/authorize/<name>`` (``action=approve|unauthorize``),
  ``POST /hub/discard/<name>``; GET on them is 405.

API (token, or cookie + ``X-XSRFToken``):

* ``POST /hub/api/platform/users`` ``{"usernames": [...]}`` -> 201
  ``{"users": [{"name", "password"}]}``; any bad name -> 400 with per-name
  ``errors`` and nothing created.
* ``POST /hub/api/users`` (JupyterHub's, used by the admin panel's Add Users):
  the same creation, answered as upstream's list of user models, each with
  its generated ``password``; ``"admin": true`` makes them admins.
* ``POST /hub/api/platform/users/<name>/password`` -> 200 ``{"name", "password"}``
  (also clears the name's login delays).
* ``POST /hub/api/platform/users/<name>/login-delays/clear`` -> 200
  ``{"name", "cleared"}``: forget the failed logins counted against the name.

Also: renaming a hub user (``PATCH /hub/api/users/<name>`` with a new
``name``) is refused, deleting a user whose server is still starting is a 409
(not JupyterHub's 500 after half the deletion), and the built-in privilege
groups cannot be deleted.
docs/accounts.md has the semantics.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.groups import GroupAPIHandler
from jupyterhub.apihandlers.users import UserAPIHandler, UserListAPIHandler
from jupyterhub.handlers import BaseHandler
from jupyterhub.roles import assign_default_roles
from jupyterhub.scopes import has_scope, needs_scope
from jupyterhub.utils import maybe_future
from nativeauthenticator.orm import UserInfo
from tornado import web

from hub_ext.accounts import passwords, privileges
from hub_ext.accounts.rules import MAX_BATCH, check_batch, signup_state

RENAME_REFUSED = (
    "Renaming users is not supported on this platform: a hub name is tied to its "
    "unix account and directories. Create a new user instead (and delete the old "
    "one once its data has been moved)."
)
DELETE_WHILE_STARTING = (
    "The server of {name} is still starting; stop it (or wait until it runs), "
    "then delete the user."
)
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0"


def _require_admin(handler) -> None:
    """403 unless the caller holds admin:users on every user."""
    if handler.current_user is None:
        raise web.HTTPError(403, "Missing or invalid credentials.")
    if not has_scope("admin:users", handler.parsed_scopes, db=handler.db):
        raise web.HTTPError(403, "Only administrators can manage accounts.")


# --- API ------------------------------------------------------------------------


class _UserCreation(APIHandler):
    """Creating users with generated passwords, all or nothing."""

    async def create_with_passwords(self, raw_names, admin: bool = False) -> dict[str, str]:
        """Create every named user with a generated password: {name: password}.

        A bad or taken name answers 400 with per-name ``errors`` (and raises
        ``web.Finish``); nothing is created then, nor when a later step fails.
        """
        auth = self.authenticator
        try:
            names, errors = check_batch(
                raw_names,
                auth.normalize_username,
                auth.name_problem,
                lambda n: self.find_user(n) is not None or auth.get_user(n) is not None,
            )
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        if errors:
            self.set_status(400)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({
                "status": 400,
                "message": f"{len(errors)} of {len(raw_names)} names refused; "
                "nothing was created.",
                "errors": errors,
            }))
            raise web.Finish()

        plain = {name: auth.new_password() for name in names}
        # bcrypt is slow on purpose: hash in threads, off the event loop
        hashes = await asyncio.gather(
            *(asyncio.to_thread(auth.hash_password, plain[n]) for n in names)
        )
        created = []
        try:
            for name, hashed in zip(names, hashes, strict=True):
                auth.set_password(name, hashed=hashed, commit=False)
            self.db.commit()
            for name in names:
                user = self.user_from_username(name)
                created.append(user)
                if admin:
                    user.admin = True
                    assign_default_roles(self.db, entity=user)
                    self.db.commit()
                await maybe_future(auth.add_user(user))
        except Exception as e:
            self.log.exception("Batch creation failed, rolling back: %s", e)
            self.db.rollback()
            for user in created:
                self.users.delete(user)
            for name in names:
                info = auth.get_user(name)
                if info is not None:
                    self.db.delete(info)
            self.db.commit()
            raise web.HTTPError(500, "Creating the users failed; nothing was created.") from None
        self.log.info("%s created %susers %s", self.current_user.name,
                      "admin " if admin else "", ", ".join(names))
        self.set_header("Cache-Control", NO_STORE)
        return plain


class BatchCreateUsersHandler(_UserCreation):
    async def post(self):
        _require_admin(self)
        body = self.get_json_body()  # 400 on invalid JSON
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'Expected a JSON object {"usernames": [...]}')
        plain = await self.create_with_passwords(body.get("usernames"))
        self.set_status(201)
        self.finish({
            "users": [{"name": n, "password": p} for n, p in plain.items()],
            "password_entropy_bits": round(
                passwords.entropy_bits(self.authenticator.password_words), 1),
        })


class PlatformUserListAPIHandler(_UserCreation, UserListAPIHandler):
    """JupyterHub's ``POST /api/users`` (the admin panel's Add Users), but every
    user it creates gets a generated password, answered once in its model's
    ``password``: upstream creates users nobody can log in as."""

    @needs_scope("admin:users")
    async def post(self):
        body = self.get_json_body()  # 400 on invalid JSON
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'Expected a JSON object {"usernames": [...], "admin": false}')
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise web.HTTPError(400, '"admin" must be true or false')
        if admin and not self.current_user.admin:
            raise web.HTTPError(403, "Only admins can grant admin permissions")
        plain = await self.create_with_passwords(body.get("usernames"), admin=admin)
        self.set_status(201)
        self.finish(json.dumps([
            dict(self.user_model(self.find_user(name)), password=password)
            for name, password in plain.items()
        ]))


class ResetPasswordHandler(APIHandler):
    async def post(self, name):
        _require_admin(self)
        auth = self.authenticator
        if self.find_user(name) is None and auth.get_user(name) is None:
            raise web.HTTPError(404, f"No such user: {name!r}")
        if auth.admin_password_file and name == auth.admin_name:
            raise web.HTTPError(
                400,
                "The admin's password comes from jupyterhub_admin_password "
                "(re-applied at every hub start); change it there.",
            )
        password = auth.new_password()
        hashed = await asyncio.to_thread(auth.hash_password, password)
        auth.set_password(name, hashed=hashed)
        auth.clear_login_delays(name)  # a reset also lifts the login delays
        self.log.info("%s reset the password of %s", self.current_user.name, name)
        self.set_header("Cache-Control", NO_STORE)
        self.finish({"name": name, "password": password})


class ClearLoginDelaysHandler(APIHandler):
    """Forget the failed logins counted against a name, from every address.

    Also for names without an account: failures are counted for unknown names
    too (so they cannot be told apart), and nothing here says which is which.
    """

    async def post(self, name):
        _require_admin(self)
        cleared = self.authenticator.clear_login_delays(name)
        self.log.info("%s cleared the login delays of %s", self.current_user.name, name)
        self.finish({"name": name, "cleared": cleared})


class PlatformUserAPIHandler(UserAPIHandler):
    """JupyterHub's user API, refusing renames (the unix identity is derived from the name)."""

    async def patch(self, user_name):
        data = self.get_json_body()
        if isinstance(data, dict) and "name" in data and data["name"] != user_name:
            if not has_scope(f"admin:users!user={user_name}", self.parsed_scopes, db=self.db):
                raise web.HTTPError(403, "Not allowed to modify this user.")
            raise web.HTTPError(400, RENAME_REFUSED)
        return await super().patch(user_name)

    async def delete(self, user_name):
        # JupyterHub deletes the user's authenticator state (password, unix
        # account) before it finds a server still starting, then fails with a
        # 500 and leaves a half-deleted user: refuse first, with a 409.
        user = self.find_user(user_name)
        if user is not None and has_scope(f"delete:users!user={user_name}", self.parsed_scopes, db=self.db):
            busy = [name or "default" for name, spawner in user.spawners.items()
                    if spawner.pending in ("spawn", "check")]
            if busy:
                raise web.HTTPError(409, DELETE_WHILE_STARTING.format(name=user_name))
        return await super().delete(user_name)


class PlatformGroupAPIHandler(GroupAPIHandler):
    """JupyterHub's group API; the built-in privilege groups cannot be deleted."""

    @needs_scope("admin:groups")
    async def post(self, group_name):
        # upstream answers {"users": [null]} with a 500 (it normalises each name)
        model = self.get_json_body() or {}
        users = model.get("users", []) if isinstance(model, dict) else None
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise web.HTTPError(400, 'The body must be an object whose "users" is a list of names')
        return await super().post(group_name)

    def delete(self, group_name):
        if group_name in privileges.BUILTIN_GROUPS and has_scope(
            f"delete:groups!group={group_name}", self.parsed_scopes, db=self.db
        ):
            raise web.HTTPError(
                400,
                f"{group_name} is a built-in group (it grants unix privileges) and "
                "cannot be deleted; remove its members instead.",
            )
        return super().delete(group_name)


# --- pages ------------------------------------------------------------------------


class _AdminPage(BaseHandler):
    def _check(self):
        if not has_scope("admin:users", self.parsed_scopes, db=self.db):
            raise web.HTTPError(403, "Only administrators can manage accounts.")


class AuthorizationPageHandler(_AdminPage):
    @web.authenticated
    async def get(self):
        self._check()
        hub_users = {u.name for u in self.db.query(orm.User.name)}
        rows = [
            {"name": info.username, "email": info.email,
             "state": signup_state(info, info.username in hub_users)}
            for info in self.db.query(UserInfo).order_by(UserInfo.username)
        ]
        html = await self.render_template(
            "platform-authorize.html",
            rows=rows,
            admin_name=self.authenticator.admin_name,
            message=self.get_argument("message", ""),
        )
        self.finish(html)


class _AuthorizationAction(_AdminPage):
    async def get(self, name):
        raise web.HTTPError(405, "Use the buttons of the authorization page (POST).")

    def _back(self, message: str):
        self.redirect(self.hub.base_url + "authorize?" + urlencode({"message": message}))

    def _info(self, name) -> UserInfo:
        info = UserInfo.find(self.db, name)
        if info is None:
            raise web.HTTPError(404, f"No signup for {name!r}")
        return info


class AuthorizeActionHandler(_AuthorizationAction):
    @web.authenticated
    async def post(self, name):
        self._check()
        info = self._info(name)
        action = self.get_body_argument("action", "approve")
        if action == "approve":
            info.is_authorized = True
        elif action == "unauthorize":
            if name == self.authenticator.admin_name:
                raise web.HTTPError(400, "The admin cannot be unauthorized.")
            info.is_authorized = False
        else:
            raise web.HTTPError(400, f"Unknown action {action!r} (approve or unauthorize)")
        self.db.commit()
        self.log.info("%s: %s %s", self.current_user.name, action, name)
        self._back(f"{name}: {'approved' if info.is_authorized else 'unauthorized'}")


class DiscardActionHandler(_AuthorizationAction):
    @web.authenticated
    async def post(self, name):
        self._check()
        info = self._info(name)
        state = signup_state(info, self.find_user(name) is not None)
        if state != "pending":
            raise web.HTTPError(
                400,
                f"{name} is an existing user, not a pending signup; it cannot be "
                "discarded here (delete users from the admin panel).",
            )
        self.db.delete(info)
        self.db.commit()
        self.log.info("%s discarded the signup of %s", self.current_user.name, name)
        self._back(f"{name}: signup discarded")


class UsersPageHandler(_AdminPage):
    @web.authenticated
    async def get(self):
        self._check()
        users = sorted(u.name for u in self.db.query(orm.User.name))
        html = await self.render_template(
            "platform-users.html",
            users=users,
            max_batch=MAX_BATCH,
            admin_name=self.authenticator.admin_name,
            admin_from_file=bool(self.authenticator.admin_password_file),
        )
        self.finish(html)


default_handlers = [
    (r"/api/platform/users", BatchCreateUsersHandler),
    (r"/api/platform/users/([^/]+)/password", ResetPasswordHandler),
    (r"/api/platform/users/([^/]+)/login-delays/clear", ClearLoginDelaysHandler),
    (r"/api/users", PlatformUserListAPIHandler),
    (r"/api/users/([^/]+)", PlatformUserAPIHandler),
    (r"/api/groups/([^/]+)", PlatformGroupAPIHandler),
    (r"/platform/users", UsersPageHandler),
]
