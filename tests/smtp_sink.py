"""A real SMTP server on 127.0.0.1 that keeps what it receives, for email tests."""

import email
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()
        self.stall_after = None  # accept this many, then leave the next one unanswered
        self.stalled = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            stalling = self.stall_after is not None and not self.release.is_set()
            if stalling and len(self.messages) >= self.stall_after:
                self.stalled.set()
                stall = True
            else:
                stall = False
        if stall:
            # Never answer: the sender waits, as a worker would if the server hung mid-message.
            import asyncio

            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "421 Closing"
        message = email.message_from_bytes(envelope.content)
        with self.lock:
            self.messages.append({"to": envelope.rcpt_tos, "message": message})
        return "250 OK"

    def recipients(self):
        with self.lock:
            return [address for m in self.messages for address in m["to"]]


class SmtpSink:
    def __init__(self, port=None):
        import socket

        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        self.sink = Sink()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=port)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.sink.release.set()
        self.controller.stop()

    @property
    def messages(self):
        return self.sink.messages
