"""Persister: copies every accepted score event from the Redis stream into PostgreSQL, once."""
