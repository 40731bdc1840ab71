"""The OpenAPI schema and the Swagger UI page, served without any CDN."""

from __future__ import annotations

import re

import pytest
import yaml

pytestmark = pytest.mark.django_db


def test_schema_lists_the_public_contract(client) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    # Path parameters may be named {id}, {step_id}, ...: compare the shapes.
    paths = {re.sub(r"\{[^}]+\}", "{id}", path) for path in schema["paths"]}
    for path in (
        "/api/v1/steps",
        "/api/v1/steps/{id}",
        "/api/v1/steps/{id}/decision",
        "/api/v1/queues",
        "/api/v1/queues/{id}/claim",
        "/api/v1/items/{id}/reviews",
        "/api/v1/items/{id}/release",
        "/api/v1/rules",
    ):
        assert path in paths, f"{path} missing from the OpenAPI schema"


def test_swagger_ui_loads_its_assets_from_our_own_static_files(client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html


def test_schema_is_valid_openapi_and_generates_without_warnings(tmp_path) -> None:
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    assert "openapi: 3" in out.read_text()
