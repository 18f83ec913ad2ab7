"""Real local endpoints for delivery tests, on 127.0.0.1 only: an HTTP sink and an SMTP server."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class HttpSink:
    """An HTTP server that records every request body (``requests``) and path (``paths``);
    ``status`` is what it answers (200 by default), ``delay_s`` how long it waits before
    answering (to exercise timeouts)."""

    status: int = 200
    delay_s: float = 0.0
    requests: list[dict] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> "HttpSink":
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with sink.lock:
                    sink.paths.append(self.path)
                    try:
                        sink.requests.append(json.loads(raw))
                    except ValueError:
                        sink.requests.append({"raw": raw.decode("utf-8", "replace")})
                if sink.delay_s:
                    time.sleep(sink.delay_s)
                self.send_response(sink.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that timed out and closed: expected in timeout tests

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that accepts AUTH LOGIN/PLAIN without TLS for one user."""

    def __init__(self, user: str, password: str):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list = []
        self.logins: list[tuple[str, str]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
                sink.messages.append(
                    (envelope.rcpt_tos, message_from_bytes(envelope.original_content, policy=policy.default))
                )
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
            secret = auth_data.password.decode() if isinstance(auth_data.password, bytes) else auth_data.password
            sink.logins.append((login, secret))
            return AuthResult(success=(login == user and secret == password))

        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=free_port(), authenticator=authenticator,
            auth_require_tls=False, auth_required=True,
        )

    def start(self) -> "SmtpSink":
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return self.controller.port

    def stop(self) -> None:
        self.controller.stop()
