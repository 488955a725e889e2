"""Local development infrastructure: throwaway Redis and PostgreSQL servers on loopback."""
