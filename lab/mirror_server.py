"""`python -m lab.mirror_server ROOT ADDRESS PORT`: serve ROOT read-only over HTTP, many clients at once."""

from __future__ import annotations

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature from the base class
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def main() -> None:
    root, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    handler = functools.partial(QuietHandler, directory=root)
    with ThreadingHTTPServer((address, port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
