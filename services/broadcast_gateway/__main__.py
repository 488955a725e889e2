"""``python -m services.broadcast_gateway``: serve until SIGTERM/SIGINT, then drain gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from services.broadcast_gateway.server import Gateway
from services.broadcast_gateway.settings import GatewaySettings
from shared import logs

log = logging.getLogger("services.broadcast_gateway")


async def serve_until_signalled(settings: GatewaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(settings).running() as url:
        log.info("gateway listening on %s", url)
        await stop.wait()
        log.info("shutting down")
    log.info("stopped")


def main() -> None:
    settings = GatewaySettings()
    logs.configure(settings.log_level)
    uvloop.run(serve_until_signalled(settings))


if __name__ == "__main__":
    main()
