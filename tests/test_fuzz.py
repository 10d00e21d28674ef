"""Property test of the webhook receiver over real HTTP, on both backends (issue #6).

Any (signature header, body) pair is answered 200, 401 or 413, never 5xx; a body is stored
exactly when it carries a valid signature, byte for byte, and is then answered 200.

Examples are derandomized, so a failure reproduces on every run and hypothesis prints the
falsifying (signature, body) pair. The server, store and tenant are created once per test
and shared by its examples (hence the suppressed function_scoped_fixture health check): the
assertions compare the store before and after each request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.storage import Store
from service.webhooks import (
    ParsedDelivery,
    PayloadError,
    decode_strictly,
    parse_delivery,
    read_delivery,
)

from .conftest import APP_SECRET, WABA_ID, Server, Tenant, add_template, sign

MAX_EXAMPLES = 400


# --- JSON-ish values, including what strict JSON forbids ------------------------------

# Any code point, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN/Infinity serialise as bare words
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)

# --- Meta's envelope, with plausible and implausible values -----------------------------

EVENTS = ["APPROVED", "REJECTED", "PENDING", "PAUSED", "DISABLED", "IN_APPEAL", "FLAGGED",
          "REINSTATED", "ARCHIVED", "UNARCHIVED", "LOCKED", "PENDING_DELETION", "DELETED",
          "LIMIT_EXCEEDED", "approved", "NEW_EVENT", ""]  # fmt: skip
FIELDS = ["message_template_status_update", "message_template_quality_update",
          "template_category_update", "message_template_components_update", "messages"]  # fmt: skip
IDS = st.one_of(
    st.sampled_from(["1689556908129832", "1", "0", WABA_ID]),
    st.integers(min_value=-5, max_value=2**64),
    st.from_regex(r"\A[0-9]{1,40}\Z"),
    SCALARS,
)
TIMES = st.one_of(
    st.integers(min_value=1_700_000_000, max_value=1_800_000_000),
    st.integers(min_value=-(2**45), max_value=2**45),
    SCALARS,
)
TEXTS = st.one_of(st.sampled_from(["en_US", "UTILITY", "MARKETING", "NONE", "GREEN"]), SCALARS)
VALUES = st.fixed_dictionaries(
    {},
    optional={
        "event": st.one_of(st.sampled_from(EVENTS), SCALARS),
        "message_template_id": IDS,
        "message_template_name": TEXTS,
        "message_template_language": TEXTS,
        "message_template_category": TEXTS,
        "reason": TEXTS,
        "new_quality_score": TEXTS,
        "previous_quality_score": TEXTS,
        "new_category": TEXTS,
        "previous_category": TEXTS,
        "other_info": JSON_VALUES,
    },
)
CHANGES = st.fixed_dictionaries(
    {"field": st.one_of(st.sampled_from(FIELDS), SCALARS), "value": VALUES | JSON_VALUES}
)
ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.just(WABA_ID), IDS),
        "time": TIMES,
        "changes": st.lists(CHANGES, max_size=4) | JSON_VALUES,
    },
)
ENVELOPES = st.fixed_dictionaries(
    {},
    optional={
        "object": st.one_of(st.just("whatsapp_business_account"), SCALARS),
        "entry": st.lists(ENTRIES | JSON_VALUES, max_size=4) | JSON_VALUES,
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random bytes, or a JSON-ish document serialised the way a sender might."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    document = draw(ENVELOPES | JSON_VALUES)
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32-le"]))
    return text.encode(encoding, "surrogatepass")  # lone surrogates become invalid UTF-8


def _uppercase(signature: str) -> str:
    return "sha256=" + signature.removeprefix("sha256=").upper()


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, str | None, bool]:
    """(body, X-Hub-Signature-256 value or None when absent, whether it is valid)."""
    body = draw(bodies())
    kind = draw(st.sampled_from(["valid", "valid", "uppercase", "random", "other", "missing"]))
    if kind == "valid":
        return body, sign(body), True
    if kind == "uppercase":
        return body, _uppercase(sign(body)), True
    if kind == "missing":
        return body, None, False
    if kind == "other":  # a real signature, but by another secret or of other bytes
        other = draw(st.sampled_from(["secret", "bytes"]))
        header = sign(body, APP_SECRET + "x") if other == "secret" else sign(body + b" ")
        return body, header, False
    # Latin-1 text without control characters: what an HTTP client can put in a header.
    latin1 = st.characters(max_codepoint=255, exclude_categories=["Cc"])
    return body, draw(st.text(latin1, max_size=80)), False  # never this body's digest


@settings(max_examples=2000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(body=bodies())
def test_the_fast_decoder_reads_every_body_as_the_strict_one(body: bytes) -> None:
    """orjson where it reads a body exactly, the standard library's decoder otherwise
    (webhooks._decode): the delivery read is the same for any body, hostile ones included
    (huge integers, lone surrogates, NaN, other encodings, random bytes)."""
    assert _outcome(lambda: parse_delivery(body)) == _outcome(
        lambda: read_delivery(decode_strictly(body))
    )


def _outcome(read: Callable[[], ParsedDelivery]) -> ParsedDelivery | str:
    try:
        return read()
    except PayloadError as error:
        return f"PayloadError: {error}"


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(attempt=requests())
async def test_any_request_is_200_401_or_413_and_stored_only_when_signed(
    server: Server, store: Store, tenant: Tenant, attempt: tuple[bytes, str | None, bool]
) -> None:
    body, signature, valid = attempt
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    newest = await store.list_deliveries(None, 1)
    before = newest[0].id if newest else 0

    status, answer, _ = await server.request("POST", "/webhooks/meta", data=body, headers=headers)

    assert status in (200, 401, 413), (status, answer)
    assert isinstance(answer, dict) and "Traceback" not in json.dumps(answer)
    added = [d for d in await store.list_deliveries(None, 5) if d.id > before]
    if valid:
        assert (status, answer) == (200, {"success": True})
        # The same bytes as an earlier example are a replay: stored once, then.
        stored = await store.list_deliveries(None, 10**6)
        [delivery] = added or [d for d in stored if d.body == body]
        assert delivery.body == body
        assert delivery.outcome in ("processed", "quarantined")
        assert (delivery.outcome == "quarantined") == bool(delivery.error), delivery.error
    else:
        assert status != 200 and answer["success"] is False
        assert added == []


@pytest.fixture
async def seeded(store: Store, tenant: Tenant) -> Tenant:
    """The tenant with one PENDING template the generated events may name."""
    await add_template(store, tenant, "1689556908129832")
    return tenant


@settings(
    max_examples=MAX_EXAMPLES // 4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=ENVELOPES)
async def test_signed_envelopes_never_break_the_templates_api(
    server: Server, seeded: Tenant, document: dict[str, Any]
) -> None:
    """Whatever a signed envelope did to the store, the API can still list and read it."""
    tenant = seeded
    body = json.dumps(document).encode()
    assert (await server.deliver(body))[0] == 200
    status, listing, _ = await server.api(tenant, "/templates", params={"per_page": 100})
    assert status == 200, listing
    last_page = listing["meta"]["last_page"]
    status, listing, _ = await server.api(
        tenant, "/templates", params={"per_page": 100, "page": last_page}
    )
    assert status == 200, listing
    for template in listing["data"][-3:]:  # the newest: those this envelope may have made
        for path in (f"/templates/{template['id']}", f"/templates/{template['id']}/history"):
            status, answer, _ = await server.api(tenant, path)
            assert status == 200 and answer["success"] is True, (path, answer)
