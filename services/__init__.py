"""The three leaderboard services, each runnable with ``python -m services.<name>``."""
