"""The service's REST answers for api-versions and invalid filters."""

from __future__ import annotations

import json

import pytest

from hubbub.protocol.filters import service_message
from hubbub.protocol.restanswers import (
    SUPPORTED_API_VERSIONS,
    RestAnswer,
    check_api_version,
    invalid_filter_answer,
)

URI = "http://127.0.0.1:8080/api/hubs/chat/:send"


def _error(answer: RestAnswer | None) -> tuple[str, str]:
    assert answer is not None
    assert answer.status == 400
    headers = dict(answer.headers)
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["api-supported-versions"] == (
        "2021-10-01, 2022-11-01, 2023-07-01, 2024-01-01, 2024-12-01"
    )
    error = json.loads(answer.body)["error"]
    assert headers["x-ms-error-code"] == error["code"]
    assert error["innerError"] is None
    return error["code"], error["message"]


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_the_service_versions_are_accepted(version: str) -> None:
    """Every version the service lists works for the routes of the first version."""
    assert check_api_version([version], "WebPubSub_SendToAll", URI) is None
    assert check_api_version([version, version], "WebPubSub_SendToAll", URI) is None


@pytest.mark.parametrize(
    "version", ["2024-12-02", "2021-05-01-preview", "2022-10-01-preview", "2020-10-01"]
)
def test_other_versions_are_unsupported(version: str) -> None:
    """Versions the service does not list, previews included, get UnsupportedApiVersion."""
    assert _error(check_api_version([version], "WebPubSub_SendToAll", URI)) == (
        "UnsupportedApiVersion",
        f"The HTTP resource that matches the request URI '{URI}' does not support the API "
        f"version '{version}'.",
    )


@pytest.mark.parametrize("version", ["foo", "2024", "2024-12-01-", "24-12-01", ""])
def test_a_value_that_is_no_version_is_invalid(version: str) -> None:
    """``api-version=foo`` gets InvalidApiVersion with the same text."""
    code, message = _error(check_api_version([version], "WebPubSub_SendToAll", URI))
    assert code == "InvalidApiVersion"
    assert message.endswith(f"does not support the API version '{version}'.")


@pytest.mark.parametrize(
    ("operation", "first"),
    [
        ("WebPubSub_RemoveConnectionFromAllGroups", "2022-11-01"),
        ("WebPubSub_AddConnectionsToGroups", "2023-07-01"),
        ("WebPubSub_RemoveConnectionsFromGroups", "2023-07-01"),
        ("WebPubSub_ListConnectionsInGroup", "2024-12-01"),
    ],
)
def test_routes_are_gated_by_the_version_that_added_them(operation: str, first: str) -> None:
    """A route asked for with an older version than its own is unsupported."""
    older = [v for v in SUPPORTED_API_VERSIONS if v < first]
    assert older
    for version in older:
        assert _error(check_api_version([version], operation, URI))[0] == "UnsupportedApiVersion"
    for version in SUPPORTED_API_VERSIONS:
        if version >= first:
            assert check_api_version([version], operation, URI) is None


def test_missing_and_ambiguous() -> None:
    """No value, or two different ones, are refused; health takes anything."""
    assert _error(check_api_version([], "WebPubSub_SendToAll", URI)) == (
        "ApiVersionUnspecified",
        "An API version is required, but was not specified.",
    )
    code, message = _error(
        check_api_version(["2024-12-01", "2024-01-01"], "WebPubSub_SendToAll", URI)
    )
    assert code == "AmbiguousApiVersion"
    assert message.startswith("The following API versions were requested: 2024-12-01, 2024-01-01.")
    assert check_api_version([], "HealthApi_GetServiceStatus", URI) is None
    assert check_api_version(["foo"], "HealthApi_GetServiceStatus", URI) is None


def test_invalid_filter_answer_is_the_recorded_one() -> None:
    """Status, headers and body as the service answered ``filter=invalid filter``."""
    message = service_message("invalid filter")
    assert message is not None
    answer = invalid_filter_answer(message)
    assert answer.status == 400
    assert answer.headers == (
        ("Content-Type", "application/problem+json; charset=utf-8"),
        ("x-ms-error-code", "Error.BadRequest"),
    )
    assert json.loads(answer.body) == {
        "code": "Error.BadRequest",
        "message": "Invalid syntax for 'invalid filter': Syntax error at position 14 in"
        " 'invalid filter'. (Parameter 'filter')",
        "target": "filter",
        "errors": {
            "filter": [
                "Invalid syntax for 'invalid filter': Syntax error at position 14 in"
                " 'invalid filter'. (Parameter 'filter')"
            ]
        },
        "type": None,
        "title": "One or more validation errors occurred.",
        "status": 400,
        "detail": None,
        "instance": None,
        "extensions": {},
    }
