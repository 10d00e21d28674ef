"""/openapi.json against the service, for the template writes (design section 12).

The request bodies' schemas say exactly what the service refuses before any Graph call
(checked against template_drafts, the one home of those rules, case by case and with
Hypothesis); the read-only 403 is documented on every write and only there; and each answer
a write gives, provoked for real against the Meta simulator, is one the document lists for
that operation, body and headers matching its schemas. Schemathesis (test_schemathesis.py)
fuzzes the same operations but seldom reaches Meta's refusals, its throttling or its failures.

Schemas are checked with jsonschema_rs, the validator Schemathesis itself brings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service.config import Settings
from service.openapi import openapi_document
from service.simulator import Simulator
from service.storage import Store
from service.template_drafts import DraftError, draft, edit

from .conftest import APP_SECRET, WABA_ID, Server, Tenant, simulated
from .test_api import read_only_token

DOCUMENT = openapi_document()
TEMPLATES = "/api/v3/workspaces/{workspace}/templates"
ONE = TEMPLATES + "/{id}"
BODY = [{"type": "BODY", "text": "Order {{1}} is on its way."}]
TEMPLATE = {"name": "order_update", "language": "en_US", "category": "UTILITY", "components": BODY}


def validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator of `schema`, a part of the document, its references resolved there."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def request_schema(path: str, method: str) -> jsonschema_rs.Validator:
    body = DOCUMENT["paths"][path][method]["requestBody"]
    return validator(body["content"]["application/json"]["schema"])


CREATE = request_schema(TEMPLATES, "post")
EDIT = request_schema(ONE, "post")


def accepted(parse: Callable[[object], object], body: object) -> bool:
    try:
        parse(body)
    except DraftError:
        return False
    return True


def changed(**fields: Any) -> dict[str, Any]:
    """TEMPLATE with `fields` changed; a field given as ... is left out."""
    merged = {**TEMPLATE, **fields}
    return {name: value for name, value in merged.items() if value is not ...}


FOOTER = {"type": "FOOTER", "text": "Reply STOP to opt out"}
CREATES = [
    TEMPLATE, changed(category="utility"), changed(category="mArKeTiNg"),
    changed(category="PROMOTION"), changed(category=None), changed(category=1),
    changed(category=...), changed(name="Order"), changed(name=""), changed(name="a" * 512),
    changed(name="a" * 513), changed(name="order\n"), changed(name="ordér"), changed(name=None),
    changed(name=...), changed(language="fil"), changed(language="en"),
    changed(language="en_us"), changed(language="EN"), changed(language="en_USA"),
    changed(language="en-US"), changed(language=""), changed(language=None),
    changed(components=[]), changed(components=[{"type": "HEADER", "format": "TEXT"}]),
    changed(components=[{"type": "body"}]),
    changed(components=[{"type": "BODY"}, {"type": "Body"}]),
    changed(components=[{"text": "no type"}]), changed(components=[{"type": 1}]),
    changed(components=["BODY"]), changed(components={"type": "BODY"}), changed(components=None),
    changed(components=BODY + [FOOTER] * 9), changed(components=BODY + [FOOTER] * 10),
    changed(waba_id=WABA_ID), changed(waba_id=None), changed(waba_id=""), changed(waba_id="12a"),
    changed(waba_id=123), changed(waba_id="1" * 32), changed(waba_id="1" * 33),
    changed(allow_category_change=True), changed(allow_category_change=None),
    changed(allow_category_change="true"), changed(allow_category_change=0),
    changed(parameter_format="named"), changed(parameter_format="POSITIONAL"),
    changed(parameter_format=None), changed(parameter_format="other"),
    changed(parameter_format=1), changed(status="APPROVED"), [TEMPLATE], "x", None, 1,
]  # fmt: skip
EDITS = [
    {"components": BODY}, {"category": "marketing"}, {"components": BODY, "category": "UTILITY"},
    {"components": None, "category": "UTILITY"}, {"components": BODY, "category": None}, {},
    {"components": None}, {"category": None}, {"components": None, "category": None},
    {"components": []}, {"components": [{"type": "HEADER"}]}, {"category": "PROMOTION"},
    {"category": "UTILITY", "name": "order_update"}, [], "x", None,
]  # fmt: skip
# `str.upper` makes "I" of the dotless i (U+0131) and "S" of the long s (U+017F): the service
# must refuse these, as the document's any-case patterns (ASCII) do.
UNICODE_CASES = [
    changed(category="UT\u0131L\u0131TY"),
    changed(parameter_format="po\u017fitional"),
]


@pytest.mark.parametrize("body", [*CREATES, *UNICODE_CASES])
def test_the_create_schema_is_what_the_service_accepts(body: object) -> None:
    assert CREATE.is_valid(body) == accepted(draft, body)


@pytest.mark.parametrize("body", EDITS)
def test_the_edit_schema_is_what_the_service_accepts(body: object) -> None:
    assert EDIT.is_valid(body) == accepted(edit, body)


# Near misses of each field, so that generated bodies are often valid and often wrong in one
# way only: what a schema that drifted from template_drafts would disagree on.
TEXT = st.text(alphabet="aZ_0-\n é", max_size=6)
COMPONENT = st.fixed_dictionaries(
    {}, optional={"type": st.one_of(st.sampled_from(["BODY", "body", "HEADER"]), TEXT,
                                    st.integers()), "text": TEXT},
)  # fmt: skip
FIELDS = {
    "name": st.one_of(st.sampled_from(["order_update", "a" * 512, "a" * 513]), TEXT),
    "language": st.one_of(st.sampled_from(["en_US", "fil", "en_us", "EN"]), TEXT),
    "category": st.one_of(st.sampled_from(["UTILITY", "marketing", "Authentication"]), TEXT),
    "components": st.one_of(st.lists(COMPONENT, max_size=12), st.just(BODY), COMPONENT),
    "waba_id": st.one_of(st.sampled_from([WABA_ID, "1" * 33]), TEXT, st.integers()),
    "allow_category_change": st.one_of(st.booleans(), st.integers(0, 1), TEXT),
    "parameter_format": st.one_of(st.sampled_from(["named", "POSITIONAL"]), TEXT),
    "extra": st.integers(),
}


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any of `fields`, each of its values, null or left out."""
    nullable = {name: st.one_of(st.none(), values) for name, values in fields.items()}
    return st.fixed_dictionaries({}, optional=nullable)


@hypothesis_settings(max_examples=300, deadline=None)
@given(bodies(FIELDS))
def test_generated_creates_are_valid_exactly_when_the_service_accepts_them(
    body: dict[str, Any],
) -> None:
    assert CREATE.is_valid(body) == accepted(draft, body)


@hypothesis_settings(max_examples=200, deadline=None)
@given(bodies({name: FIELDS[name] for name in ("components", "category", "name")}))
def test_generated_edits_are_valid_exactly_when_the_service_accepts_them(
    body: dict[str, Any],
) -> None:
    assert EDIT.is_valid(body) == accepted(edit, body)


# --- the read-only answer -------------------------------------------------------------------

READ_ONLY_DOCUMENTED = {
    (method.upper(), path)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if operation.get("security") and "403" in operation["responses"]
}


def test_the_read_only_answer_is_documented_on_every_write_and_only_there() -> None:
    """Every bearer-token operation but the reads and the sync endpoint, which a read-only
    token may call (design section 12)."""
    writes = {
        (method.upper(), path)
        for path, operations in DOCUMENT["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") and method != "get"
    } - {("POST", TEMPLATES + "/sync")}
    assert writes == READ_ONLY_DOCUMENTED
    assert {("POST", TEMPLATES), ("POST", ONE), ("DELETE", ONE)} <= writes
    assert len(writes) == 6  # and the webhook subscriptions' create, delete and enable


async def test_a_read_only_token_gets_the_documented_403_on_every_write(
    server: Server, store: Store, tenant: Tenant
) -> None:
    reader = await read_only_token(store, tenant)
    answers = {}
    for method, path in sorted(READ_ONLY_DOCUMENTED):
        answers[method, path] = await documented_answer(
            server, reader, method, path, json=TEMPLATE, template_id="1"
        )
    assert {operation: status for operation, (status, _, _) in answers.items()} == dict.fromkeys(
        READ_ONLY_DOCUMENTED, 403
    )


# --- each answer of a write, provoked for real, is one the document gives -----------------


@pytest.fixture
async def graph() -> AsyncIterator[tuple[Simulator, str]]:
    """Meta; its reviewer decides only when a test says so."""
    simulator = Simulator(app_secret=APP_SECRET, review_delay_s=None)
    async with simulated(simulator, WABA_ID) as running:
        yield running


@pytest.fixture
def meta(graph: tuple[Simulator, str]) -> Simulator:
    return graph[0]


@pytest.fixture
def settings(settings: Settings, graph: tuple[Simulator, str]) -> Settings:
    return replace(settings, graph_url=graph[1])


async def documented_answer(
    server: Server, tenant: Tenant, method: str, path: str, *, template_id: object = None,
    key: str | None = None, **kwargs: Any,
) -> tuple[int, Any, Any]:  # fmt: skip
    """`tenant`'s request to the documented `path`, once its answer's status, body and headers
    are checked to be as the document says for that operation."""
    headers = {"Authorization": f"Bearer {tenant.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    url = path.format(workspace=tenant.workspace_id, id=template_id)
    status, body, response_headers = await server.request(method, url, headers=headers, **kwargs)
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (method, path, status, body)
    documented = responses[str(status)]
    schema = documented["content"]["application/json"]["schema"]
    assert [error.message for error in validator(schema).iter_errors(body)] == [], body
    for name, header in documented.get("headers", {}).items():
        value = response_headers.get(name)
        assert value is not None or not header["required"], (name, status)
        if value is not None:
            typed = int(value) if header["schema"].get("type") == "integer" else value
            assert validator(header["schema"]).is_valid(typed), (name, value)
    return status, body, response_headers


async def test_a_create_edit_and_delete_answer_as_documented(
    server: Server, tenant: Tenant, meta: Simulator
) -> None:
    status, created, _ = await documented_answer(server, tenant, "POST", TEMPLATES, json=TEMPLATE)
    assert status == 201
    template_id = created["data"]["id"]
    meta.set_status(created["data"]["provider_id"], "APPROVED")  # Meta edits approved ones
    edited = await documented_answer(
        server, tenant, "POST", ONE, template_id=template_id, json={"components": BODY}
    )
    deleted = await documented_answer(server, tenant, "DELETE", ONE, template_id=template_id)
    assert (edited[0], deleted[0]) == (200, 200)


async def test_refusals_answer_as_documented(
    server: Server, tenant: Tenant, meta: Simulator
) -> None:
    meta.add_templates(WABA_ID, [{"id": "777", "name": "made_at_meta", "language": "en_US",
                                  "status": "APPROVED", "category": "UTILITY"}])  # fmt: skip
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", TEMPLATES, {"json": changed(name="Not Valid")}),
        ("POST", TEMPLATES, {"json": changed(components=[{"type": "BODY"}])}),  # Meta: no text
        ("POST", TEMPLATES, {"json": TEMPLATE}),
        ("POST", TEMPLATES, {"json": TEMPLATE}),  # exists here
        ("POST", TEMPLATES, {"json": changed(name="made_at_meta")}),  # exists at Meta
        ("POST", ONE, {"json": {"components": BODY}, "template_id": 999_999}),
        ("DELETE", ONE, {"template_id": "not-an-id"}),
        ("POST", TEMPLATES, {"json": changed(components=[{**BODY[0], "text": "x" * 300_000}])}),
        ("POST", TEMPLATES, {"data": b"[" * 10_000}),
    ]  # fmt: skip
    statuses = [
        (await documented_answer(server, tenant, method, path, **options))[0]
        for method, path, options in requests
    ]
    assert statuses == [422, 422, 201, 409, 409, 404, 404, 413, 422]


@pytest.mark.parametrize(
    ("fault", "options", "status", "kind"),
    [("5xx", {"meta_body": True}, 502, "transient"), ("5xx", {}, 502, "transient"),
     ("190", {}, 502, "token_invalid"), ("error", {"code": 200, "http_status": 403}, 502,
     "permission"), ("80008", {}, 429, None)],
)  # fmt: skip
async def test_meta_failing_or_throttling_answers_as_documented(
    server: Server, tenant: Tenant, meta: Simulator, fault: str, options: dict[str, Any],
    status: int, kind: str | None,
) -> None:  # fmt: skip
    meta.fail(WABA_ID, fault, **options)
    got, body, _ = await documented_answer(server, tenant, "POST", TEMPLATES, json=TEMPLATE)
    assert (got, body["error"].get("kind")) == (status, kind)
    if status == 429:  # the stored throttle answers the next write without asking Meta
        again = await documented_answer(server, tenant, "POST", TEMPLATES, json=TEMPLATE)
        assert again[0] == 429 and "error" not in again[1]


async def test_idempotency_answers_as_documented(
    server: Server, tenant: Tenant, meta: Simulator
) -> None:
    first = await documented_answer(server, tenant, "POST", TEMPLATES, json=TEMPLATE, key="k-1")
    repeat = await documented_answer(server, tenant, "POST", TEMPLATES, json=TEMPLATE, key="k-1")
    other = await documented_answer(
        server, tenant, "POST", TEMPLATES, json=changed(name="other"), key="k-1"
    )
    malformed = await documented_answer(
        server, tenant, "POST", TEMPLATES, json=TEMPLATE, key="\u00e9"
    )
    assert (first[0], repeat[0], repeat[2].get("Idempotent-Replayed")) == (201, 201, "true")
    assert (other[0], list(other[1]["errors"])) == (422, ["Idempotency-Key"])
    assert (malformed[0], list(malformed[1]["errors"])) == (422, ["Idempotency-Key"])
