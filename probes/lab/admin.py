"""The lab's runtime switches over HTTP, on 127.0.0.1 only.

    GET    /rules                        every rule in force
    PUT    /rules     {"scenario": "open", "dns": "nxdomain"}   set rules (one per layer key)
    DELETE /rules     {"scenario": "open"} or {"scenario": "open", "layer": "dns"}
                      (or the same as query parameters)       clear rules
    POST   /rules/reset                  back to the catalogue
    GET    /expected                     the expected verdicts under the rules in force

Changes apply to the next query or connection, and rewrite expected.json.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

from probes.lab.scenarios import Layer

__all__ = ["Controls", "admin_app"]


class Controls(Protocol):
    """What the admin endpoint may do to a running lab."""

    def set_rule(self, scenario: str, layer: str, action: str) -> None: ...
    def clear_rule(self, scenario: str, layer: str | None = None) -> None: ...
    def reset_rules(self) -> None: ...
    def rules(self) -> dict[str, dict[str, str]]: ...
    @property
    def expected(self) -> list[dict[str, str]]: ...


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a request (query parameters count too); ValueError otherwise."""
    fields: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        try:
            document = json.loads(await request.text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ValueError("the body must be a JSON object")
        fields.update(document)
    if not isinstance(fields.get("scenario"), str):
        raise ValueError('name the scenario: {"scenario": "open", ...}')
    return fields


def admin_app(lab: Controls) -> web.Application:
    """The admin application for ``lab``."""

    async def get_rules(_: web.Request) -> web.Response:
        return web.json_response({"rules": lab.rules()})

    async def put_rules(request: web.Request) -> web.Response:
        try:
            fields = await _body(request)
            layers = {k: v for k, v in fields.items() if k in set(Layer)}
            if not layers:
                raise ValueError(f"give at least one rule, as a layer key: {', '.join(Layer)}")
            for layer, action in layers.items():
                lab.set_rule(fields["scenario"], layer, str(action))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response({"rules": lab.rules()})

    async def delete_rules(request: web.Request) -> web.Response:
        try:
            fields = await _body(request)
            named = [k for k in fields if k in set(Layer)]
            if "layer" in fields:
                named.append(str(fields["layer"]))
            if not named:
                lab.clear_rule(fields["scenario"])
            for layer in named:
                lab.clear_rule(fields["scenario"], layer)
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response({"rules": lab.rules()})

    async def reset(_: web.Request) -> web.Response:
        lab.reset_rules()
        return web.json_response({"rules": lab.rules()})

    async def expected(_: web.Request) -> web.Response:
        return web.json_response(lab.expected)

    app = web.Application()
    app.router.add_get("/rules", get_rules)
    app.router.add_put("/rules", put_rules)
    app.router.add_delete("/rules", delete_rules)
    app.router.add_post("/rules/reset", reset)
    app.router.add_get("/expected", expected)
    return app
