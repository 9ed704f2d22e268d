"""A local stand-in for the part of Stripe's API the billing code calls."""

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


class FakeStripe:
    def __init__(self):
        self.sessions = {}
        self.refunds = []
        self.refund_keys = []  # the Idempotency-Key of every refund request
        # (status, error) answered to refund requests instead of a refund, e.g.
        # (400, {"type": "invalid_request_error", "code": "charge_disputed", "message": …})
        self.refund_error = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def pay(self, session_id):
        self.sessions[session_id].update(
            payment_status="paid", status="complete", payment_intent=f"pi_{secrets.token_hex(8)}"
        )
        return self.sessions[session_id]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                session_id = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/v1/checkout/sessions/") and session_id in fake.sessions:
                    return self._answer(200, fake.sessions[session_id])
                return self._answer(
                    404, {"error": {"type": "invalid_request_error", "message": "No such session"}}
                )

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                if self.path == "/v1/checkout/sessions":
                    session_id = f"cs_test_{secrets.token_hex(8)}"
                    fake.sessions[session_id] = {
                        "id": session_id,
                        "object": "checkout.session",
                        "url": f"https://checkout.stripe.com/c/pay/{session_id}",
                        "client_reference_id": form["client_reference_id"],
                        "amount_total": int(form["line_items[0][price_data][unit_amount]"]),
                        "currency": form["line_items[0][price_data][currency]"],
                        "payment_status": "unpaid",
                        "status": "open",
                        "payment_intent": None,
                    }
                    return self._answer(200, fake.sessions[session_id])
                if self.path == "/v1/refunds":
                    fake.refund_keys.append(self.headers.get("Idempotency-Key"))
                    if fake.refund_error:
                        status, error = fake.refund_error
                        return self._answer(status, {"error": error})
                    fake.refunds.append(form)
                    return self._answer(
                        200,
                        {
                            "id": f"re_{secrets.token_hex(6)}",
                            "object": "refund",
                            "status": "succeeded",
                        },
                    )
                return self._answer(404, {"error": {"message": "not faked"}})

        return Handler
