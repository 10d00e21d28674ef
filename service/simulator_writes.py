"""The simulator's template writes, as Meta's Graph API takes them:

- `POST /{version}/{waba_id}/message_templates` creates -> `{"id", "status", "category"}`
- `POST /{version}/{template_id}` edits components and/or category -> `{"success": true}`
- `DELETE /{version}/{waba_id}/message_templates?name=[&hsm_id=]` deletes one language
  (with `hsm_id`) or every language of the name -> `{"success": true}`

Parameters come as a JSON body, a form body or the query string, as Graph takes them. The
rules live in simulator_rules; new and edited templates go to the reviewer.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Protocol

from aiohttp import web

from .simulator_graph import VERSION, Account, GraphEndpoints, unsupported
from .simulator_review import Reviewer
from .simulator_rules import (
    HELD_AFTER_DELETE,
    HOLD_S,
    check_create_budget,
    check_editable,
    check_name_free,
    not_found,
    param_error,
    validate_create,
    validate_edit,
)
from .simulator_state import State

NOT_PARAMS = frozenset({"access_token", "appsecret_proof"})


class Writable(Account, Protocol):
    """What the write endpoints read of the simulator, afresh at each request."""

    create_status: str  # the status a create answers (Meta: PENDING, or APPROVED at once)

    def now(self) -> float: ...


class WriteEndpoints:
    """Creates, edits and deletes over the simulator's state; `auth` checks the caller."""

    def __init__(self, account: Writable, auth: GraphEndpoints, reviewer: Reviewer) -> None:
        self._account = account
        self._auth = auth
        self._reviewer = reviewer

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(VERSION + "/{waba_id}/message_templates", self._create)
        app.router.add_delete(VERSION + "/{waba_id}/message_templates", self._delete)
        app.router.add_post(VERSION + "/{object_id}", self._edit)

    @property
    def _state(self) -> State:
        return self._account.state

    async def _create(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        self._auth.authorize(request, waba_id)
        now = self._account.now()
        created = self._state.created.setdefault(waba_id, deque())
        check_create_budget(created, waba_id, now)
        fields = validate_create(await read_params(request))
        check_name_free(self._state, waba_id, fields["name"], fields["language"], now)
        status = self._account.create_status
        template = self._state.create_template(waba_id, fields, status)
        created.append(now)
        if not fields["allow_category_change"]:
            self._state.fixed_category.add(template["id"])
        if status == "PENDING":
            self._reviewer.submit(template)
        return web.json_response(
            {"id": template["id"], "status": status, "category": template["category"]}
        )

    async def _edit(self, request: web.Request) -> web.Response:
        object_id = request.match_info["object_id"]
        self._auth.token(request)
        waba_id = self._state.owner.get(object_id)
        if waba_id is None:
            raise unsupported(object_id, request.method)
        self._auth.authorize(request, waba_id)
        template = self._state.template(object_id)
        changes = validate_edit(await read_params(request), template["category"])
        now = self._account.now()
        edits = self._state.edits.setdefault(object_id, [])
        check_editable(template, changes, edits, now)
        if template["status"] == "APPROVED":
            edits.append(now)
        template.update(changes, status="PENDING", rejected_reason="NONE")
        self._reviewer.submit(template)
        return web.json_response({"success": True})

    async def _delete(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        self._auth.authorize(request, waba_id)
        params = await read_params(request)
        name, hsm_id = params.get("name"), params.get("hsm_id")
        if not isinstance(name, str) or not name:
            raise param_error("The parameter name is required")
        matches = [
            t
            for t in self._state.templates[waba_id].values()
            if t["name"] == name
            and t["status"] != "DELETED"
            and (hsm_id is None or str(t["id"]) == str(hsm_id))
        ]
        if not matches:
            raise not_found(name)
        for template in matches:
            self._remove(waba_id, template, self._account.now())
        return web.json_response({"success": True})

    def _remove(self, waba_id: str, template: dict[str, Any], now: float) -> None:
        """Mark it DELETED (it stays listed); an approved one holds its name and language."""
        if template["status"] in HELD_AFTER_DELETE:
            self._state.held[(waba_id, template["name"], template["language"])] = now + HOLD_S
        template["status"] = "DELETED"


async def read_params(request: web.Request) -> dict[str, Any]:
    """Graph's parameters: the query string, then a JSON or form body over it. A form's
    `components` is JSON text, as Graph takes it."""
    params: dict[str, Any] = {k: v for k, v in request.query.items() if k not in NOT_PARAMS}
    if not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise param_error("The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise param_error("The request body must be a JSON object")
        params.update(body)
        return params
    form = await request.post()
    params.update((k, v) for k, v in form.items() if isinstance(v, str) and k not in NOT_PARAMS)
    if isinstance(params.get("components"), str):
        try:
            params["components"] = json.loads(params["components"])
        except ValueError:
            raise param_error("Param components must be a JSON array") from None
    return params
