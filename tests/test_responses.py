"""service.responses.JSONResponse: orjson's rendering reads back as Starlette's would."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette import responses

from service.responses import JSONResponse

# What the API answers hold: text of any code point but lone surrogates (the store never
# keeps one), 64-bit integers, finite floats, and nesting.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(content=VALUES)
def test_an_answer_reads_back_as_starlettes_would(content: Any) -> None:
    ours = JSONResponse(content).body
    theirs = responses.JSONResponse(content).body
    assert json.loads(ours) == json.loads(theirs) == content


def test_an_answer_is_compact_utf_8_json_as_before() -> None:
    content = {"success": True, "name": "pedido_confirmação", "data": [1, None, 2.5]}
    answer = JSONResponse(content)
    assert answer.body == responses.JSONResponse(content).body
    assert (
        answer.body == '{"success":true,"name":"pedido_confirmação","data":[1,null,2.5]}'.encode()
    )
    assert answer.media_type == "application/json"
