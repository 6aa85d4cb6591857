"""``Server-Timing`` header with the time Django spent on a request (REDLINE_SERVER_TIMING=1).

Browsers show it in their network panel and benchmarks read it to separate server time from
the client's own overhead. Off by default: it tells clients how long requests take.
"""

from __future__ import annotations

import time


class ServerTimingMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        response["Server-Timing"] = f"app;dur={elapsed_ms:.2f}"
        return response
