"""The command line's side of the HTTP views: one GET with the API token, and the error a command
reports in one line with its exit status (`streams.cli`, `streams.demo`)."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from strata.streams.config import Settings


class CommandError(Exception):
    """A failure to report in one line, with the exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def http_get(settings: Settings, path: str, query: dict | None = None, timeout: float = 10.0) -> tuple[int, dict]:
    url = settings.web_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=settings.auth_headers()), timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise CommandError(f"no Strata worker answers at {settings.web_url} ({getattr(exc, 'reason', exc)}); start one with `strata worker`") from None
