"""``python -m services.broadcast_gateway``: serve until SIGTERM/SIGINT, then drain gracefully."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

import uvloop

from services.broadcast_gateway.server import Gateway
from services.broadcast_gateway.settings import GatewaySettings
from shared import logs
from shared.lifecycle import serve_until_signalled

log = logging.getLogger("services.broadcast_gateway")


def running(settings: GatewaySettings) -> AbstractAsyncContextManager[str]:
    """The gateway's lifecycle (``Gateway.running``): yields its WebSocket URL."""
    return Gateway(settings).running()


def main() -> None:
    settings = GatewaySettings()
    logs.configure(settings.log_level)
    uvloop.run(serve_until_signalled(running(settings), log))


if __name__ == "__main__":
    main()
