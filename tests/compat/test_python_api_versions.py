"""api-versions through azure-messaging-webpubsubservice, whose ``api_version`` option is sent
as given (``@azure/web-pubsub`` always sends 2024-12-01).

The service answers the versions of its ``api-supported-versions`` header, each route from the
version that introduced it, and everything else with ASP.NET API Versioning's 400 (see
protocol/restanswers.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.compat._clients import ServerLike
from tests.conftest import Server


@pytest.fixture
def server(server_either_lane: Server) -> Server:
    """Every test twice: the fast lane's answers must be aiohttp's."""
    return server_either_lane


SUPPORTED = ["2021-10-01", "2022-11-01", "2023-07-01", "2024-01-01", "2024-12-01"]


def _service(server: ServerLike, hub: str, version: str) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(
        server.connection_string, hub=hub, api_version=version
    )


def _refusal(call: Any) -> tuple[int | None, str | None, str]:
    with pytest.raises(HttpResponseError) as caught:
        call()
    error = caught.value
    return error.status_code, error.error.code if error.error else None, error.message


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_supported_version_is_answered(server: ServerLike, hub: str, version: str) -> None:
    _service(server, hub, version).send_to_all("x", content_type="text/plain")


def test_answers_list_the_supported_versions(server: ServerLike, hub: str) -> None:
    seen: dict[str, str] = {}

    def hook(response: Any) -> None:
        seen.update((k.lower(), v) for k, v in response.http_response.headers.items())

    _service(server, hub, "2024-12-01").send_to_all(
        "x", content_type="text/plain", raw_response_hook=hook
    )
    assert seen.get("api-supported-versions") == ", ".join(SUPPORTED)


@pytest.mark.parametrize(
    ("version", "code"),
    [("foo", "InvalidApiVersion"), ("2025-01-01", "UnsupportedApiVersion")],
)
def test_other_versions_are_refused(server: ServerLike, hub: str, version: str, code: str) -> None:
    status, seen_code, message = _refusal(
        lambda: _service(server, hub, version).send_to_all("x", content_type="text/plain")
    )
    assert (status, seen_code) == (400, code)
    uri = f"{server.endpoint}/api/hubs/{hub}/:send"
    assert (
        f"The HTTP resource that matches the request URI '{uri}' does not support the API "
        f"version '{version}'." in message
    )


def test_a_route_is_refused_before_its_version(server: ServerLike, hub: str) -> None:
    # Listing a group's connections came with 2024-12-01.
    status, code, _ = _refusal(
        lambda: list(_service(server, hub, "2024-01-01").list_connections(group="g"))
    )
    assert (status, code) == (400, "UnsupportedApiVersion")
