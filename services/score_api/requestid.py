"""``X-Request-ID``: accepted when well-formed, generated otherwise, echoed on the response.

The id lands in ``request.state.request_id``, in the stream event and in the logs, so one
update can be followed from the client through the persister. The ASGI part lives in
``services.score_api.metrics.RequestMiddleware``, one layer for everything around a request.
"""

from __future__ import annotations

import os

from shared.formats import REQUEST_ID

REQUEST_ID_HEADER = b"x-request-id"
MAX_USER_AGENT = 256


def request_id(header: str | None) -> str:
    if header and REQUEST_ID.matches(header):
        return header
    return os.urandom(12).hex()
