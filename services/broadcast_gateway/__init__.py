"""Broadcast gateway: follows the score stream and pushes the live top N to WebSocket clients."""
