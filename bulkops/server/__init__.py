"""The Web Services API v1 server: an ASGI app served by hypercorn (trio) on SQLite."""
