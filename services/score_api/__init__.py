"""Score API: verifies tokens, turns actions into points, updates the board atomically."""
