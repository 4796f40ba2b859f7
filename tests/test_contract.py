"""Contract fuzzing: schemathesis against the running app's own ``/openapi.json`` on loopback.

Every generated request (a bounded number per operation) must get an answer that the schema
documents, with a body that matches it, and never a server error. Operations are driven directly
with hypothesis (schemathesis' pytest plugin does not load under pytest 9).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from servers import live_server

EXAMPLES_PER_OPERATION = 30


@pytest.mark.slow
def test_api_honours_its_openapi_contract(detector_factory):
    with live_server({"aasist": detector_factory("aasist", "fast")}, request_timeout_s=60) as srv:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 7
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck)
            )
            def check(case) -> None:
                # Random bytes are schema-valid uploads but not audio; refusing them with 4xx is correct.
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            check()
