"""Jobline's HTTP server: the JSON API, the SSE stream and the dashboard.

    python server.py [--host 127.0.0.1] [--port 8080] [--redis-url URL] [--processes N]

The implementation is the `jobline` package (`jobline.server`: `create_app(settings)`); this file
is the entry point, the same as the `jobline-server` command.
"""

from jobline.server import Settings, create_app, main

__all__ = ["Settings", "create_app", "main"]

if __name__ == "__main__":
    main()
