"""``python -m services.score_api``: serve until SIGTERM/SIGINT, then shut down gracefully."""

from __future__ import annotations

import logging

from services.score_api.service import running
from services.score_api.settings import ApiSettings
from shared import lifecycle

if __name__ == "__main__":
    lifecycle.main(ApiSettings(), running, logging.getLogger("services.score_api"))
