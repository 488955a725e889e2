"""Code that two or more leaderboard services share: settings, tokens, keys, scripts, events."""
