"""``python -m services.score_api``: serve the API with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import uvicorn

from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from shared import logs


def main() -> None:
    settings = ApiSettings()
    logs.configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        log_config=None,  # keep shared.logs' JSON handler
        access_log=False,
        # Our TRUSTED_PROXIES rule is the only one: uvicorn would otherwise believe
        # X-Forwarded-For from 127.0.0.1 by default.
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
