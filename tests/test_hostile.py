"""Hostile input over real HTTP on both backends (issue #6).

Signatures, bodies, handshakes and API requests that Meta never sends but an attacker, a
broken proxy or a buggy client might. The rules: a signed delivery is answered 200 and
stored (quarantined with the error when it cannot be used) and its other changes are still
applied; anything unsigned is refused and nothing is stored; every refusal is a clear 4xx;
never a 5xx, never a traceback. test_webhooks.py and test_api.py cover the ordinary cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from service import meta_webhooks
from service.config import Settings
from service.storage import Delivery, Store

from .conftest import (
    APP_SECRET,
    VERIFY_TOKEN,
    WABA_ID,
    Server,
    Tenant,
    add_template,
    compact,
    make_tenant,
    serving,
    sign,
    start_server,
)

ENTRY_TIME = 1751247548
HUGE_INT = "9" * 5000  # past Python's 4,300-digit int parsing limit


def status_change(template_id: Any, event: Any = "APPROVED", **value: Any) -> dict[str, Any]:
    """Meta's shape; hostile tests pass values of any type, and `value` overrides."""
    change = meta_webhooks.status_change(event, template_id, f"template_{template_id}", "en_US")
    change["value"].update(value)
    return change


def entry(*changes: Any, waba_id: Any = WABA_ID, entry_time: Any = ENTRY_TIME) -> dict[str, Any]:
    return meta_webhooks.entry(waba_id, entry_time, *changes)


def envelope(*entries: Any) -> dict[str, Any]:
    return meta_webhooks.delivery(*entries)


def approve(template_id: str, entry_time: int = ENTRY_TIME) -> bytes:
    """A plain, valid delivery approving one template."""
    return compact(envelope(entry(status_change(template_id), entry_time=entry_time)))


def assert_clean(status: int, body: Any) -> None:
    """A 4xx or 2xx answer that shows no internals."""
    assert status < 500, (status, body)
    text = body if isinstance(body, str) else json.dumps(body)
    assert "Traceback" not in text and 'File "' not in text, text


def assert_json_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, (status, body)
    assert isinstance(body, dict) and body["success"] is False and body["message"], body
    assert_clean(status, body)


async def all_deliveries(store: Store) -> list[Delivery]:
    return await store.list_deliveries(None, 1000)


async def template_status(store: Store, tenant: Tenant, local_id: int) -> str:
    template = await store.get_template(tenant.workspace_id, local_id)
    assert template is not None
    return template.status


async def raw_exchange(
    base_url: str, request: bytes, *, half_close: bool = False, timeout_s: float = 5.0
) -> bytes:
    """Send bytes on a fresh connection and read until the server closes it."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def statuses_in(raw: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def post_head(length: int | str, signature: str, *extra: str) -> bytes:
    lines = [
        "POST /webhooks/meta HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        f"X-Hub-Signature-256: {signature}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- signatures -------------------------------------------------------------------------


def _sha1(body: bytes) -> str:
    return hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()


def refused_signatures() -> dict[str, tuple[bytes, dict[str, str]]]:
    """Name -> (body, headers): none carries a valid X-Hub-Signature-256 of its body."""
    body = approve("1689556908129832")
    valid = sign(body)
    digest = valid.removeprefix("sha256=")
    reserialised = json.dumps(json.loads(body), indent=1).encode()
    as_header = {
        "non-hex digits of the right length": "sha256=" + "g" * 64,
        "one hex digit short": valid[:-1],
        "one hex digit too many": valid + "0",
        "the sha1 digest under the sha256 name": "sha256=" + _sha1(body),
        "signed with another secret": sign(body, "not-" + APP_SECRET),
        "no equals sign": "sha256" + digest,
        "colon instead of equals": "sha256:" + digest,
        "scheme twice": "sha256=sha256=" + digest,
        "another scheme with the right digest": "md5=" + digest,
        "two signatures folded into one header": f"{valid}, {valid}",
        "a space inside the digest": f"sha256={digest[:32]} {digest[32:]}",
        "whitespace only": "   ",
        "UTF-8 bytes in the digest": ("sha256=" + digest[:-1] + "\u00e4")
        .encode()
        .decode("latin-1"),
    }
    cases = {name: (body, {"X-Hub-Signature-256": header}) for name, header in as_header.items()}
    cases["sha1 X-Hub-Signature alone, correct"] = (
        body,
        {"X-Hub-Signature": "sha1=" + _sha1(body)},
    )
    cases["re-serialised JSON under the original's signature"] = (
        reserialised,
        {"X-Hub-Signature-256": valid},
    )
    cases["original bytes under the re-serialised JSON's signature"] = (
        body,
        {"X-Hub-Signature-256": sign(reserialised)},
    )
    return cases


async def test_signature_edge_cases_are_refused_and_nothing_is_stored(
    server: Server, store: Store, tenant: Tenant, subtests: pytest.Subtests
) -> None:
    for name, (body, headers) in refused_signatures().items():
        with subtests.test(msg=name):
            status, answer, _ = await server.request(
                "POST", "/webhooks/meta", data=body, headers=headers
            )
            assert_json_error(status, answer, 401)
    assert await all_deliveries(store) == []


async def test_uppercase_hex_and_surrounding_whitespace_are_accepted(
    server: Server, store: Store, tenant: Tenant
) -> None:
    """Hex case does not matter (README); HTTP strips whitespace around a header value."""
    uppercase, spaced = approve("1", ENTRY_TIME), approve("2", ENTRY_TIME + 1)
    for body, header in [
        (uppercase, "sha256=" + sign(uppercase).removeprefix("sha256=").upper()),
        (spaced, " \t" + sign(spaced) + " \t"),
    ]:
        status, answer, _ = await server.deliver(body, header)
        assert (status, answer) == (200, {"success": True}), header
    assert {d.body for d in await all_deliveries(store)} == {uppercase, spaced}


async def test_two_signature_headers_are_refused_whichever_is_valid(
    server: Server, store: Store, tenant: Tenant
) -> None:
    body = approve("1689556908129832")
    bogus = "sha256=" + "0" * 64
    for first, second in [(bogus, bogus), (sign(body), bogus), (bogus, sign(body)),
                          (sign(body), sign(body))]:  # fmt: skip
        headers = CIMultiDict([("X-Hub-Signature-256", first), ("X-Hub-Signature-256", second)])
        status, answer, _ = await server.request(
            "POST", "/webhooks/meta", data=body, headers=headers
        )
        assert_json_error(status, answer, 401)
        assert "several signature headers" in answer["message"]
    assert await all_deliveries(store) == []


# --- body size and framing ----------------------------------------------------------------


@pytest.fixture
async def capped(settings: Settings, store: Store) -> AsyncIterator[str]:
    """The base URL of a server whose body cap is 1,024 bytes."""
    uv, task, base_url = await start_server(replace(settings, max_body_bytes=1024))
    try:
        yield base_url
    finally:
        uv.should_exit = True
        await task


def padded(size: int) -> bytes:
    """A valid JSON document of exactly `size` bytes."""
    head = compact({"entry": [], "pad": ""})
    return head[:-2] + b"x" * (size - len(head)) + b'"}'


async def test_body_cap_is_exact_for_declared_and_chunked_bodies(capped: str, store: Store) -> None:
    at_cap, over_cap = padded(1024), padded(1025)

    async def chunks(body: bytes) -> Any:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    connector = aiohttp.TCPConnector(force_close=True)  # a refused body spoils its connection
    async with aiohttp.ClientSession(connector=connector) as session:
        url = capped + "/webhooks/meta"
        for data, body, expected in [
            (at_cap, at_cap, 200),
            (chunks(at_cap), at_cap, 200),
            (over_cap, over_cap, 413),
            (chunks(over_cap), over_cap, 413),
        ]:
            headers = {"X-Hub-Signature-256": sign(body)}
            async with session.post(url, data=data, headers=headers) as response:
                answer = await response.json()
                assert response.status == expected, answer
                assert_clean(response.status, answer)
    stored = await all_deliveries(store)
    assert [d.body for d in stored] == [at_cap]  # sent twice, the same bytes: stored once


async def test_lying_content_length_stores_nothing_unsigned(capped: str, store: Store) -> None:
    body = compact({"entry": []})
    signature = sign(body)
    # Declared far over the cap, tiny body: refused before reading.
    raw = await raw_exchange(capped, post_head(10**12, signature) + body)
    assert statuses_in(raw) == [413], raw
    assert b'"success":false' in raw
    # Declared longer than sent, then the client stops sending: no answer, nothing stored.
    raw = await raw_exchange(capped, post_head(len(body) + 50, signature) + body, half_close=True)
    assert not any(200 <= code < 300 or code >= 500 for code in statuses_in(raw)), raw
    # Declared shorter than sent: the signature does not match the bytes read.
    raw = await raw_exchange(capped, post_head(len(body) - 2, signature) + body)
    assert statuses_in(raw) and not any(200 <= c < 300 or c >= 500 for c in statuses_in(raw)), raw
    # Not a number, two lengths, or a length and chunks: the HTTP parser refuses the request.
    for head in [
        post_head("12abc", signature),
        post_head(len(body), signature, f"Content-Length: {len(body) + 1}"),
        post_head(len(body), signature, "Transfer-Encoding: chunked"),
    ]:
        raw = await raw_exchange(capped, head + body)
        assert statuses_in(raw) and all(400 <= c < 500 for c in statuses_in(raw)), raw
    assert await all_deliveries(store) == []


async def test_a_client_that_disconnects_mid_body_is_not_a_server_error(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    body = compact({"entry": []})
    head = post_head(len(body) + 50, sign(body))
    async with serving(settings) as server:  # leaving waits for the request to be over
        await raw_exchange(server.base_url, head + body, half_close=True)
    access = [r.getMessage() for r in caplog.records if r.name == "service.access"]
    assert [line for line in access if '"POST /webhooks/meta"' in line], access  # it was served
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [], [r.getMessage() for r in errors]
    assert await all_deliveries(store) == []


# --- signed hostile bodies ------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def _with(good_id: str, *hostile: Any, raw: bytes | None = None) -> bytes:
    """A body with a good change approving `good_id` next to hostile changes or entries."""
    good = entry(status_change(good_id))
    if raw is not None:  # hostile bytes spliced in as an extra entry
        return compact(envelope(good))[:-2] + b"," + raw + b"]}"
    return compact(envelope(good, *hostile))


def _other(value: Any) -> dict[str, Any]:
    """An entry whose one change is of a field the service does not use."""
    return entry({"field": "messages", "value": value})


def _splice(document: dict[str, Any], placeholder: str, literal: bytes) -> bytes:
    return compact(document).replace(json.dumps(placeholder).encode(), literal)


# name -> (body builder given the good template's provider id, outcome, error fragments,
#          whether the good change is applied)
SIGNED_CASES: dict[str, tuple[Any, str, tuple[str, ...], bool]] = {
    "100,000-deep nesting": (
        lambda g: _with(g, raw=b'{"id":"1","time":1,"changes":' + DEEP + b"}"),
        "quarantined", ("not valid JSON",), False,
    ),
    "NaN and Infinity": (
        lambda g: _splice(envelope(entry(status_change(g)), _other("@")), "@",
                          b"[NaN,Infinity,-Infinity]"),
        "quarantined", ("not valid JSON",), False,
    ),
    "duplicate keys: the last one counts": (
        lambda g: compact(envelope(entry(status_change(g, event="REJECTED")))).replace(
            b'"event":"REJECTED"', b'"event":"REJECTED","event":"APPROVED"'
        ),
        "processed", (), True,
    ),
    "duplicate entry lists: the last one counts": (
        lambda g: b'{"entry":[{"id":"1"}],"entry":[' + compact(entry(status_change(g))) + b"]}",
        "processed", (), True,
    ),
    "NUL in the template name": (
        lambda g: _with(g, entry(status_change("777", message_template_name="a\u0000b"))),
        "quarantined", ("entry[1].changes[0]", "message_template_name"), True,
    ),
    "NUL in the event and in the reason": (
        lambda g: _with(g, entry(status_change("777", event="APP\u0000ROVED"),
                                 status_change("778", event="REJECTED", reason="x\u0000"))),
        "quarantined", ("entry[1].changes[0]: event", "entry[1].changes[1]: reason"), True,
    ),
    "NUL in a field the service does not read": (
        lambda g: _with(g, _other({"text": "a\u0000b"})),
        "processed", (), True,
    ),
    "raw NUL byte inside a string": (
        lambda g: _with(g, _other("@")).replace(b'"@"', b'"a\x00b"'),
        "quarantined", ("not valid JSON",), False,
    ),
    "lone surrogate in the template name": (
        lambda g: _with(g, entry(status_change("777", message_template_name="\ud800"))),
        "quarantined", ("entry[1].changes[0]", "not valid Unicode"), True,
    ),
    "lone surrogate in a field the service does not read": (
        lambda g: _with(g, _other({"text": "\udfff\ud800"})),
        "processed", (), True,
    ),
    "invalid UTF-8 bytes": (
        lambda g: _with(g, _other("@")).replace(b'"@"', b'"\xff\xfe\xc3("'),
        "quarantined", ("not valid JSON",), False,
    ),
    "UTF-16 with a byte order mark": (
        lambda g: json.dumps(envelope(entry(status_change(g)))).encode("utf-16"),
        "processed", (), True,
    ),
    "UTF-8 with a byte order mark": (
        lambda g: b"\xef\xbb\xbf" + _with(g),
        "processed", (), True,
    ),
    "wrong types everywhere": (
        lambda g: _with(
            g,
            entry(status_change("1"), waba_id=1.02290129340398e14),
            entry(status_change("2"), entry_time="1751247548"),
            {"id": WABA_ID, "time": ENTRY_TIME, "changes": {"0": status_change("3")}},
            entry({"field": "message_template_status_update", "value": [1]},
                  status_change(True), status_change("4", event=42),
                  status_change("5", event=None), status_change("6", message_template_name=[])),
            [], None, "entry",
        ),
        "quarantined",
        ("entry[1]: entry.id", "entry[2]: entry.time", "entry[3]: entry has no changes",
         "entry[4].changes[0]", "entry[4].changes[1]: message_template_id",
         "entry[4].changes[2]: event", "entry[4].changes[3]: event is missing",
         "entry[4].changes[4]: message_template_name", "entry[5]", "entry[6]", "entry[7]"),
        True,
    ),
    "texts over 1,024 characters": (
        lambda g: _with(g, entry(status_change("777", message_template_name="n" * 1025),
                                 status_change("778", reason="r" * 5000))),
        "quarantined", ("entry[1].changes[0]", "entry[1].changes[1]"), True,
    ),
}  # fmt: skip


async def test_signed_hostile_bodies_are_stored_and_the_rest_applied(
    server: Server, store: Store, tenant: Tenant, subtests: pytest.Subtests
) -> None:
    for index, (name, (build, outcome, fragments, applied)) in enumerate(SIGNED_CASES.items()):
        with subtests.test(msg=name):
            good_id = str(5_000_000 + index)
            local_id = await add_template(store, tenant, good_id)
            body = build(good_id)
            before = {d.id for d in await all_deliveries(store)}
            status, answer, _ = await server.deliver(body)
            assert (status, answer) == (200, {"success": True})
            [stored] = [d for d in await all_deliveries(store) if d.id not in before]
            assert stored.body == body
            assert stored.outcome == outcome, stored.error
            for fragment in fragments:
                assert fragment in (stored.error or ""), stored.error
            expected = "APPROVED" if applied else "PENDING"
            assert await template_status(store, tenant, local_id) == expected


def _huge_int_case(where: str, good_id: str) -> bytes:
    marker = {"message_template_id": "@", "entry.time": "@", "unread field": "@"}[where]
    hostile = {
        "message_template_id": entry(status_change(marker)),
        "entry.time": entry(status_change("777"), entry_time=marker),
        "unread field": _other({"count": marker}),
    }[where]
    return _splice(envelope(entry(status_change(good_id)), hostile), "@", HUGE_INT.encode())


@pytest.mark.parametrize("where", ["message_template_id", "entry.time", "unread field"])
async def test_5000_digit_integers_spoil_only_their_own_change(
    server: Server, store: Store, tenant: Tenant, where: str
) -> None:
    local_id = await add_template(store, tenant, "5100000")
    body = _huge_int_case(where, "5100000")
    status, answer, _ = await server.deliver(body)
    assert (status, answer) == (200, {"success": True})
    [stored] = await all_deliveries(store)
    assert stored.body == body
    if where == "unread field":
        assert (stored.outcome, stored.error) == ("processed", None)
    else:
        assert stored.outcome == "quarantined" and "entry[1]" in (stored.error or "")
    assert await template_status(store, tenant, local_id) == "APPROVED"


async def test_a_1024_character_non_ascii_event_does_not_block_the_others(
    server: Server, store: Store, tenant: Tenant, request: pytest.FixtureRequest
) -> None:
    """Within MAX_TEXT, so valid: an unknown event, recorded with applied: false."""
    local_id = await add_template(store, tenant, "5200000")
    event = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1024))  # ~3 KB, no repeats
    body = _with("5200000", entry(status_change("777", event=event)))
    status, answer, _ = await server.deliver(body)
    assert (status, answer) == (200, {"success": True})
    [stored] = await all_deliveries(store)
    assert (stored.body, stored.outcome, stored.error) == (body, "processed", None)
    assert await template_status(store, tenant, local_id) == "APPROVED"


async def test_a_3_mb_batch_of_1000_changes_is_applied_in_full(
    server: Server, store: Store, tenant: Tenant
) -> None:
    changes = [
        status_change(str(6_000_000 + i), message_template_name=f"t{i}_" + "n" * 1000,
                      reason="r" * 1000, message_template_category="UTILITY",
                      unread_padding="p" * 1000)
        for i in range(1000)
    ]  # fmt: skip
    body = compact(envelope(*(entry(*changes[i : i + 100]) for i in range(0, 1000, 100))))
    assert 3_000_000 < len(body) < 4 * 1024 * 1024
    headers = {"X-Hub-Signature-256": sign(body)}
    status, answer, _ = await server.request(
        "POST", "/webhooks/meta", data=io.BytesIO(body), headers=headers
    )
    assert (status, answer) == (200, {"success": True})
    [stored] = await all_deliveries(store)
    assert (stored.outcome, stored.error, stored.body == body) == ("processed", None, True)
    status, listing, _ = await server.api(tenant, "/templates", params={"status": "APPROVED"})
    assert status == 200 and listing["meta"]["total"] == 1000


async def test_10000_empty_entries_do_not_hide_the_good_one(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    body = compact(envelope(*([{}] * 10_000), entry(status_change("1689556908129832"))))
    status, answer, _ = await server.deliver(body)
    assert (status, answer) == (200, {"success": True})
    [stored] = await all_deliveries(store)
    assert stored.outcome == "quarantined" and "entry[0]: " in (stored.error or "")
    assert (stored.error or "").endswith("; and 9,980 more")  # bounded (webhooks.py)
    assert await template_status(store, tenant, local_id) == "APPROVED"


# --- handshake --------------------------------------------------------------------------


async def test_hostile_handshakes(server: Server, subtests: pytest.Subtests) -> None:
    def query(**params: str) -> str:
        return "&".join(f"{k}={v}" for k, v in params.items())

    ok = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}
    refused: dict[str, tuple[str, int]] = {
        "wrong token of the same length": (
            query(**{**ok, "hub.verify_token": VERIFY_TOKEN[:-1] + "X", "hub.challenge": "c"}),
            403,
        ),
        "empty token": (query(**{**ok, "hub.verify_token": "", "hub.challenge": "c"}), 403),
        "token with NUL": (
            query(**{**ok, "hub.verify_token": VERIFY_TOKEN + "%00", "hub.challenge": "c"}), 403,
        ),
        "token as invalid UTF-8": (
            query(**{**ok, "hub.verify_token": "%ff%fe", "hub.challenge": "c"}), 403,
        ),
        "10 KB challenge": (query(**ok, **{"hub.challenge": "a" * 10_240}), 400),
        "unicode challenge": (query(**ok, **{"hub.challenge": "%C3%A4%E2%82%AC"}), 400),
        "Arabic-Indic digits": (query(**ok, **{"hub.challenge": "%D9%A1%D9%A2"}), 400),
        "challenge with a newline": (query(**ok, **{"hub.challenge": "abc%0A"}), 400),
        "challenge with markup": (query(**ok, **{"hub.challenge": "%3Cscript%3E"}), 400),
        "empty challenge": (query(**ok, **{"hub.challenge": ""}), 400),
        "mode in capitals": (query(**{**ok, "hub.mode": "SUBSCRIBE", "hub.challenge": "c"}), 400),
    }  # fmt: skip
    for name, (raw_query, expected) in refused.items():
        with subtests.test(msg=name):
            url = URL(f"{server.base_url}/webhooks/meta?{raw_query}", encoded=True)
            async with server.session.get(url) as response:
                answer = await response.json()
                assert_json_error(response.status, answer, expected)
    repeated = {  # Starlette reads the last of repeated parameters
        "repeated challenge": (query(**ok) + "&hub.challenge=first&hub.challenge=second", 200),
        "right token then wrong token": (
            query(**ok) + "&hub.verify_token=wrong&hub.challenge=c", 403,
        ),
        "wrong token then right token": (
            f"hub.mode=subscribe&hub.verify_token=wrong&hub.verify_token={VERIFY_TOKEN}"
            "&hub.challenge=c",
            200,
        ),
        "repeated mode, last not subscribe": (
            query(**ok) + "&hub.mode=unsubscribe&hub.challenge=c", 400,
        ),
    }  # fmt: skip
    for name, (raw_query, expected) in repeated.items():
        with subtests.test(msg=name):
            url = URL(f"{server.base_url}/webhooks/meta?{raw_query}", encoded=True)
            async with server.session.get(url) as response:
                text = await response.text()
                assert response.status == expected, text
                if expected == 200:
                    assert text in ("second", "c")
                else:
                    assert json.loads(text)["success"] is False


# --- API --------------------------------------------------------------------------------


async def test_weird_authorization_headers_get_401(
    server: Server, store: Store, tenant: Tenant, subtests: pytest.Subtests
) -> None:
    token_id, _, secret = tenant.token.removeprefix("tsk_").partition(".")
    latin1 = "Bearer tsk_\u00ff\u00fe.\u00e9"  # bytes 0x80-0xff as sent on the wire
    headers = {
        "very long, not our shape": "Bearer " + "A" * 60_000,
        "very long, our shape": f"Bearer tsk_{'a' * 32}.{'x' * 30_000}",
        "very long id": f"Bearer tsk_{'a' * 33}.{secret}",
        "bytes 0x80-0xff": latin1,
        "UTF-8 bytes": "Bearer tsk_\u20ac.\u00e4".encode().decode("latin-1"),
        "Bearer twice": f"Bearer Bearer {tenant.token}",
        "tab instead of space": f"Bearer\t{tenant.token}",
        "no space": f"Bearer{tenant.token}",
        "right id, empty secret": f"Bearer tsk_{token_id}.",
        "right id, secret of another case": f"Bearer tsk_{token_id}.{secret.swapcase()}",
        "id in capitals": f"Bearer tsk_{token_id.upper()}.{secret}",
        "token with a trailing dot": f"Bearer {tenant.token}.",
        "token twice": f"Bearer {tenant.token} {tenant.token}",
        "Basic with the token": f"Basic {tenant.token}",
    }
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates"
    for name, value in headers.items():
        with subtests.test(msg=name):
            sent = {"Authorization": value}
            status, answer, response_headers = await server.request("GET", path, headers=sent)
            assert (status, answer) == (401, {"success": False, "message": "Unauthenticated"})
            assert response_headers["WWW-Authenticate"] == "Bearer"


async def test_extra_spaces_around_the_token_are_tolerated(server: Server, tenant: Tenant) -> None:
    """RFC 9110 allows 1*SP after the scheme; HTTP strips whitespace around the value."""
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates"
    for value in [f"Bearer     {tenant.token}", f"  Bearer {tenant.token}  "]:
        status, answer, _ = await server.request("GET", path, headers={"Authorization": value})
        assert status == 200, (value, answer)


async def test_path_traversal_and_encoded_segments(
    server: Server, store: Store, settings: Settings, tenant: Tenant, subtests: pytest.Subtests
) -> None:
    other = await make_tenant(store, settings, waba_id="555000111")
    own_id = await add_template(store, tenant, "1689556908129832")
    other_id = await add_template(store, other, "1689556908129999")
    own, theirs = tenant.workspace_id, other.workspace_id
    base = "/api/v3/workspaces"
    paths = {
        "dot-dot workspace": (f"{base}/../templates", 404),
        "dot-dot to another tenant": (f"{base}/{own}/../{theirs}/templates", 404),
        "encoded slashes to another tenant": (f"{base}/{own}%2F..%2F{theirs}/templates", 404),
        "encoded dot-dot to another tenant": (f"{base}/%2E%2E/{theirs}/templates", 404),
        "another tenant's template by dot-dot": (
            f"{base}/{own}/templates/../../{theirs}/templates/{other_id}", 404,
        ),
        "encoded slash in the id": (f"{base}/{own}/templates/..%2F{other_id}", 404),
        "NUL in the workspace": (f"{base}/{own}%00/templates", 404),
        "NUL in the id": (f"{base}/{own}/templates/{own_id}%00", 404),
        "invalid UTF-8 in the workspace": (f"{base}/%ff%fe/templates", 404),
        "backslashes": (f"{base}/{own}\\..\\{theirs}/templates", 404),
        "largest id": (f"{base}/{own}/templates/{2**63 - 1}", 404),
        "past the largest id": (f"{base}/{own}/templates/{2**63}", 404),
        "negative zero id": (f"{base}/{own}/templates/-0", 404),
        "their template through our workspace": (f"{base}/{own}/templates/{other_id}", 404),
        "their history through our workspace": (
            f"{base}/{own}/templates/{other_id}/history", 404,
        ),
    }  # fmt: skip
    auth = {"Authorization": f"Bearer {tenant.token}"}
    for name, (path, expected) in paths.items():
        with subtests.test(msg=name):
            url = URL(server.base_url + path, encoded=True)
            async with server.session.get(url, headers=auth) as response:
                answer = await response.json()
                assert response.status == expected, answer
                assert_json_error(response.status, answer, expected)
                assert theirs not in json.dumps(answer)


async def test_huge_pages_and_repeated_parameters(
    server: Server, store: Store, tenant: Tenant, subtests: pytest.Subtests
) -> None:
    await add_template(store, tenant, "1689556908129832", status="PENDING")
    last_page = (2**63 - 1) // 100
    cases = {
        "last allowed page, 100 per page": (f"page={last_page}&per_page=100", 200),
        "last allowed page, 1 per page": (f"page={last_page}&per_page=1", 200),
        "one page too far": (f"page={last_page + 1}", 422),
        "page 2**64": (f"page={2**64}", 422),
        "page with 4,300 digits": ("page=" + "9" * 4300, 422),
        "page with a plus sign": ("page=%2B1", 422),
        "page with spaces": ("page=%201%20", 422),
        "empty page": ("page=", 422),
        "repeated page, last bad": ("page=1&page=abc", 422),
        "repeated page, last good": ("page=abc&page=1", 200),
        "repeated per_page, last too big": ("per_page=10&per_page=101", 422),
        "repeated status, last bad": ("status=PENDING&status=PEN%3BDING", 422),
        "repeated status, last good": ("status=PEN%3BDING&status=PENDING", 200),
        # filter values are capped at 512 characters (api.MAX_TEXT_PARAM, in /openapi.json)
        "many empty statuses": ("status=" + "," * 500, 200),
        "too long a status list": ("status=" + "," * 5000, 422),
        "a thousand statuses": ("status=" + ",".join(["PENDING"] * 1000), 422),
        "a thousand repeated names": ("&".join(["name=a"] * 1000), 200),
        "unknown parameters": ("sort=id;DROP%20TABLE%20templates&limit=1e9", 422),
    }
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates"
    auth = {"Authorization": f"Bearer {tenant.token}"}
    for name, (query, expected) in cases.items():
        with subtests.test(msg=name):
            url = URL(f"{server.base_url}{path}?{query}", encoded=True)
            async with server.session.get(url, headers=auth) as response:
                answer = await response.json()
                assert response.status == expected, answer
                assert_clean(response.status, answer)
                if expected == 200:
                    assert answer["success"] is True and isinstance(answer["data"], list)
                else:
                    assert answer["errors"], answer
    status, listing, _ = await server.api(tenant, "/templates")
    assert status == 200 and listing["meta"]["total"] == 1  # nothing was dropped


async def test_numbers_past_4300_digits_are_not_a_server_error(
    server: Server, tenant: Tenant
) -> None:
    digits = "9" * 4301
    failures = []
    for path in [f"/templates?page={digits}", f"/templates?per_page={digits}",
                 f"/templates/{digits}", f"/templates/{digits}/history"]:  # fmt: skip
        status, answer, _ = await server.api(tenant, path)
        if status >= 500 or not isinstance(answer, dict) or answer.get("success") is not False:
            failures.append((path[:30], status, answer))
    assert failures == []


@pytest.mark.parametrize(
    "database_url",
    [
        "sqlite",
        "postgresql",
    ],
    indirect=True,
)
async def test_nul_in_a_filter_is_not_a_server_error(server: Server, tenant: Tenant) -> None:
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates"
    auth = {"Authorization": f"Bearer {tenant.token}"}
    for query in ["name=a%00b", "language=%00", "provider_id=1%00"]:
        url = URL(f"{server.base_url}{path}?{query}", encoded=True)
        async with server.session.get(url, headers=auth) as response:
            answer = await response.json()
            assert response.status in (200, 422), (query, answer)
            assert_clean(response.status, answer)
