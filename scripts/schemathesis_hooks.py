"""Schemathesis checks of our own, loaded by scripts/schemathesis-check.sh (SCHEMATHESIS_HOOKS).

`openai_error_shape`: every 4xx/5xx answer is JSON in OpenAI's error shape,
{"error": {"message": str, "type": str, "param": str|null, "code": str|null}}, whatever
the route, method or body — also the answers the spec does not list (framing errors,
unknown routes, wrong methods).
"""

import schemathesis


@schemathesis.check
def openai_error_shape(ctx, response, case):
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        raise AssertionError(f"{response.status_code} answer is not JSON: {e}") from None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        raise AssertionError(f"{response.status_code} answer has no error object: {body!r}")
    for field in ("message", "type"):
        if not isinstance(err.get(field), str):
            raise AssertionError(f"error.{field} is not a string: {body!r}")
    for field in ("param", "code"):
        if field not in err or not (err[field] is None or isinstance(err[field], str)):
            raise AssertionError(f"error.{field} is missing or not a string/null: {body!r}")
    return None
