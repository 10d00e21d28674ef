"""The checks of a create or edit request before any Graph call (design section 12): pure,
so each rule is tested here and the API tests only that its errors come back as 422."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.template_drafts import MAX_COMPONENTS, Draft, DraftError, Edit, draft, edit

BODY = {"type": "BODY", "text": "Order {{1}} is on its way."}
VALID = {"name": "order_update", "language": "en_US", "category": "UTILITY", "components": [BODY]}


def errors_of(body: object, check: Any = draft) -> dict[str, list[str]]:
    with pytest.raises(DraftError) as info:
        check(body)
    return info.value.errors


def test_a_valid_create_is_sent_to_meta_as_given_without_the_absent_options() -> None:
    made = draft({**VALID, "category": "utility"})
    assert made == Draft("order_update", "en_US", "UTILITY", (BODY,))
    assert made.graph_body() == {**VALID, "category": "UTILITY"}


def test_the_options_reach_meta_in_its_spelling() -> None:
    made = draft({**VALID, "waba_id": "102290129340398", "allow_category_change": False,
                  "parameter_format": "named"})  # fmt: skip
    assert made.waba_id == "102290129340398"
    assert made.graph_body() == {
        **VALID, "allow_category_change": False, "parameter_format": "NAMED",
    }  # fmt: skip


def test_null_options_count_as_absent() -> None:
    made = draft({**VALID, "waba_id": None, "allow_category_change": None})
    assert (made.waba_id, made.allow_category_change) == (None, None)


@pytest.mark.parametrize(
    ("fields", "wrong"),
    [({"name": "Order"}, "name"), ({"name": ""}, "name"), ({"name": "a b"}, "name"),
     ({"name": "x" * 513}, "name"), ({"name": ["x"]}, "name"), ({"language": "EN"}, "language"),
     ({"language": 1}, "language"), ({"category": "PROMOTION"}, "category"),
     ({"category": True}, "category"), ({"components": []}, "components"),
     ({"components": "BODY"}, "components"), ({"components": [BODY, BODY]}, "components"),
     ({"components": [{"type": "HEADER"}]}, "components"), ({"components": [1]}, "components"),
     ({"components": [{"type": 1}]}, "components"),
     ({"components": [BODY] + [{"type": "BUTTONS"}] * MAX_COMPONENTS}, "components"),
     ({"waba_id": "12a"}, "waba_id"), ({"waba_id": 123}, "waba_id"),
     ({"allow_category_change": "false"}, "allow_category_change"),
     ({"parameter_format": "braces"}, "parameter_format"), ({"hsm_id": "1"}, "hsm_id")],
)  # fmt: skip
def test_each_wrong_field_is_named(fields: dict[str, Any], wrong: str) -> None:
    errors = errors_of({**VALID, **fields})
    assert list(errors) == [wrong] and errors[wrong][0].startswith(f"The {wrong} field ")


def test_the_longest_name_and_a_lower_case_body_type_pass() -> None:
    made = draft({**VALID, "name": "x" * 512, "components": [{"type": "body", "text": "Hi"}]})
    assert len(made.name) == 512


def test_every_wrong_field_is_named_at_once() -> None:
    errors = errors_of({"name": "Bad Name", "extra": 1})
    assert sorted(errors) == ["category", "components", "extra", "language", "name"]
    assert errors["language"] == ["The language field is required."]
    assert "accepted: name, language" in errors["extra"][0]


@pytest.mark.parametrize("body", [None, [], "x", 1, [VALID]])
def test_a_body_that_is_no_object_is_one_error(body: object) -> None:
    assert errors_of(body) == {"body": ["The body must be a JSON object."]}
    assert errors_of(body, edit) == {"body": ["The body must be a JSON object."]}


def test_the_error_text_names_each_field() -> None:
    with pytest.raises(DraftError) as info:
        draft({**VALID, "name": None, "category": None})
    assert str(info.value) == (
        "name: The name field is required.; category: The category field is required."
    )


def test_an_edit_changes_components_category_or_both() -> None:
    assert edit({"components": [BODY]}) == Edit((BODY,), None)
    assert edit({"category": "marketing"}).graph_body() == {"category": "MARKETING"}
    assert edit({"components": [BODY], "category": "UTILITY"}).graph_body() == {
        "components": [BODY], "category": "UTILITY",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "wrong"),
    [({}, "components"), ({"components": None, "category": None}, "components"),
     ({"components": []}, "components"), ({"category": "X"}, "category"),
     ({"name": "renamed", "components": [BODY]}, "name"),
     ({"language": "pt_BR", "components": [BODY]}, "language")],
)  # fmt: skip
def test_a_wrong_edit_is_named(body: dict[str, Any], wrong: str) -> None:
    assert list(errors_of(body, edit)) == [wrong]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FIELD = st.sampled_from(
    ["name", "language", "category", "components", "waba_id", "allow_category_change",
     "parameter_format", "other"]
)  # fmt: skip


@given(st.dictionaries(FIELD, JSON) | JSON)
def test_any_json_is_a_draft_or_a_draft_error(body: object) -> None:
    """Whatever a client sends, the API answers 200-class or 422, never a 500."""
    for check in (draft, edit):
        try:
            check(body)
        except DraftError as error:
            assert error.errors and all(error.errors.values())
