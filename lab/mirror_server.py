"""`python -m lab.mirror_server ROOT ADDRESS PORT [WEBHOOK_DIR]`: serve ROOT read-only over HTTP, many clients
at once; with WEBHOOK_DIR, also record webhook deliveries.

``POST /webhook/<name>`` appends ``{"received": <unix time>, "body": <the JSON posted>}`` as one line to
``WEBHOOK_DIR/<name>.jsonl``: the lab's stand-in for an operator's webhook endpoint (Alertmanager's receivers
post there), so a test sees what was delivered and when.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_WEBHOOK = re.compile(r"^/webhook/([a-z0-9][a-z0-9-]{0,62})$")
_LOCK = threading.Lock()


class QuietHandler(SimpleHTTPRequestHandler):
    webhook_dir: Path | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature from the base class
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()

    def do_POST(self) -> None:  # noqa: N802 - name from the base class
        match = _WEBHOOK.match(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length <= 4 << 20 else b""
        if self.webhook_dir is None or not match:
            self.send_error(404, "POST /webhook/<name> only")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_error(400, "the body is not JSON")
            return
        line = json.dumps({"received": time.time(), "body": body}, sort_keys=True) + "\n"
        with _LOCK, open(self.webhook_dir / f"{match.group(1)}.jsonl", "a") as out:
            out.write(line)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main() -> None:
    root, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    webhook_dir = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    if webhook_dir is not None:
        webhook_dir.mkdir(parents=True, exist_ok=True)
    handler_class = type("Handler", (QuietHandler,), {"webhook_dir": webhook_dir})
    handler = functools.partial(handler_class, directory=root)
    with ThreadingHTTPServer((address, port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
