"""A real SMTP server on 127.0.0.1 that keeps what it receives, for email tests.

Two ways to make a sender fail at a chosen message, for tests of a worker that dies mid-batch:
`stall_after = n` accepts n messages and leaves the next one unanswered (the server does not
have it), and `kill_after = (n, pid)` stores the n-th message, then SIGKILLs `pid` before
answering "250 OK" (the server has it; the sender never learns). `refuse` holds addresses
that it answers "550 No such user", `reject` those whose messages it answers "554 Rejected";
with `pipelining` on it offers RFC 2920 pipelining, which it serves as it reads commands, one
after the other. `connections` counts the sessions
(EHLO or HELO) it was asked for."""

import asyncio
import email
import os
import signal
import socket
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()
        self.stall_after = None  # accept this many, then leave the next one unanswered
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.kill_after = None  # (n, pid): store the n-th message, SIGKILL pid, then answer
        self.killed = threading.Event()
        self.refuse = set()
        self.reject = set()
        self.pipelining = False
        self.connections = 0

    async def handle_HELO(self, server, session, envelope, hostname):
        self.connections += 1
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            stalling = self.stall_after is not None and not self.release.is_set()
            stall = stalling and len(self.messages) >= self.stall_after
            if stall:
                self.stalled.set()
        if stall:
            # Never answer: the sender waits, as a worker would if the server hung mid-message.
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "421 Closing"
        if self.reject & set(envelope.rcpt_tos):
            return "554 Rejected"
        message = email.message_from_bytes(envelope.content)
        with self.lock:
            self.messages.append(
                {"to": envelope.rcpt_tos, "message": message, "bytes": envelope.content}
            )
            stored = len(self.messages)
        if self.kill_after is not None and stored == self.kill_after[0]:
            # Stored, not yet answered: the sender dies without learning that it was sent.
            os.kill(self.kill_after[1], signal.SIGKILL)
            self.killed.set()
        return "250 OK"

    def recipients(self):
        with self.lock:
            return [address for m in self.messages for address in m["to"]]


class SmtpSink:
    def __init__(self, port=None):
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
