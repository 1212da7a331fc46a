"""Streamed answers checked against the spec on every run (generated cases reach a 200
stream only by chance): one stream per streaming operation, every event validated by
schemathesis' response_schema_conformance, plus a negative control: the same stream with a
chunk's `id` renamed must be caught, so the check cannot pass by validating nothing.

Usage: schemathesis_streams.py OPENAPI_URL API_KEY MODEL (run by schemathesis-check.sh)."""

import sys

import schemathesis
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import response_schema_conformance

url, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
auth = {"Authorization": f"Bearer {key}"}
schema = schemathesis.openapi.from_url(url, headers=auth)
bodies = {
    "/v1/completions": {"model": model, "prompt": "The capital of", "max_tokens": 4, "stream": True},
    "/v1/chat/completions": {
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
}
for path, body in bodies.items():
    case = schema[path]["POST"].Case(body=body, headers=auth)
    response = case.call()
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    assert response.headers["content-type"][0].startswith("text/event-stream"), response.headers
    events = response.text.count("data: ")
    assert events >= 3, (path, response.text[:300])
    case.validate_response(response, checks=[response_schema_conformance])
    # Negative control: the same stream with one chunk's `id` renamed must fail.
    broken = Response(
        status_code=response.status_code,
        headers=response.headers,
        content=response.content.replace(b'"id":', b'"ix":', 1),
        request=response.request,
        elapsed=response.elapsed,
        verify=response.verify,
        http_version=response.http_version,
        message=response.message,
        encoding="utf-8",
    )
    try:
        case.validate_response(broken, checks=[response_schema_conformance])
    except FailureGroup as e:
        print(f"{path}: {events} events conform; a chunk without `id` is caught: {e.exceptions[0].title}")
    else:
        raise AssertionError(f"{path}: a chunk without `id` passed validation")
