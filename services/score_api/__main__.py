"""``python -m services.score_api``: serve until SIGTERM/SIGINT, then shut down gracefully."""

from __future__ import annotations

import logging

import uvloop

from services.score_api.service import running
from services.score_api.settings import ApiSettings
from shared import logs
from shared.lifecycle import serve_until_signalled

log = logging.getLogger("services.score_api")


def main() -> None:
    settings = ApiSettings()
    logs.configure(settings.log_level)
    uvloop.run(serve_until_signalled(running(settings), log))


if __name__ == "__main__":
    main()
