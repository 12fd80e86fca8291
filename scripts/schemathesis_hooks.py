"""Schemathesis hooks for scripts/schemathesis: how to send the request bodies that
schemathesis has no serializer for.

`POST /v1/runs` takes a run as NDJSON (`application/x-ndjson`, `application/ndjson`),
which the contract describes as a string: it is sent as its UTF-8 bytes; anything else
schemathesis generates for it (a negative case) as one JSON value per line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/ndjson")
def ndjson(ctx, value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, list):
        return "".join(json.dumps(v) + "\n" for v in value).encode("utf-8")
    return (json.dumps(value) + "\n").encode("utf-8")
