"""``python -m services.broadcast_gateway``: serve until SIGTERM/SIGINT, then drain gracefully."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

from services.broadcast_gateway.server import Gateway
from services.broadcast_gateway.settings import GatewaySettings
from shared import lifecycle


def running(settings: GatewaySettings) -> AbstractAsyncContextManager[str]:
    """The gateway's lifecycle (``Gateway.running``): yields its WebSocket URL."""
    return Gateway(settings).running()


if __name__ == "__main__":
    lifecycle.main(GatewaySettings(), running, logging.getLogger("services.broadcast_gateway"))
