"""Property-based API testing from the OpenAPI document, against the real server: generated
requests to every documented route find no 5xx and no response outside the schema."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install .[test]")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from cifar_onnx.app import create_app  # noqa: E402
from cifar_onnx.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow
# The document the server publishes at /schema/openapi.json (it does not depend on the model).
schema = schemathesis.openapi.from_dict(create_app(Settings.from_env(environ={})).openapi_schema.to_schema())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, server: str) -> None:
    # Random bytes are valid `format: binary` to the schema but are not an image: the documented
    # answer is 415, so "schema-valid data must be accepted" does not apply to uploads.
    case.call_and_validate(base_url=server, excluded_checks=[positive_data_acceptance])


def test_the_served_document_is_the_one_tested(server: str) -> None:
    import httpx

    assert httpx.get(f"{server}/schema/openapi.json").json()["paths"].keys() == schema.raw_schema["paths"].keys()
