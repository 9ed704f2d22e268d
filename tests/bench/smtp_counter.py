"""A fast SMTP server for the email benchmark: it accepts every message, keeps none, and counts
them by recipient and Message-ID, so that the bench measures the sender and not the server.

It runs in a process of its own (the sender's figure must not share its CPU with the server),
speaks just enough SMTP for smtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, with
commands pipelined or not), and when its standard input closes prints one JSON line: messages
received, distinct Message-IDs, messages without one, and each recipient with how many
messages they got. With --aiosmtpd it counts the same behind aiosmtpd (the server of the email
tests), to measure what that server can take.

    python -m tests.bench.smtp_counter --port 2525 [--aiosmtpd]
"""

import argparse
import json
import re
import socket
import socketserver
import sys
import threading
from collections import Counter

MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


class Tally:
    def __init__(self):
        self.messages = 0
        self.message_ids = set()
        self.without_id = 0
        self.recipients = Counter()

    def add(self, recipients, data):
        self.messages += 1
        head = data[: data.find(b"\r\n\r\n")]
        found = MESSAGE_ID.search(head)
        if found:
            self.message_ids.add(b" ".join(found.group(1).split()))
        else:
            self.without_id += 1
        self.recipients.update(recipients)

    def report(self):
        return {
            "messages": self.messages,
            "message_ids": len(self.message_ids),
            "without_message_id": self.without_id,
            "recipients": dict(self.recipients),
        }


class Session(socketserver.BaseRequestHandler):
    """One SMTP session, in a thread of its own with blocking calls (for one sender on one
    connection, cheaper than an event loop): what arrives is read at once, every command and
    message in it served, and the replies written at once, as RFC 2920 asks of a server."""

    def handle(self):
        sock, tally = self.request, self.server.tally
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer, replies, recipients, data = b"", [b"220 localhost ESMTP counter\r\n"], [], False
        while True:
            if replies:
                sock.sendall(b"".join(replies))
                if replies[-1].startswith(b"221"):
                    return
                replies = []
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            buffer += chunk
            while True:
                if data:  # a message, up to the line with a dot alone
                    end = -2 if buffer.startswith(b".\r\n") else buffer.find(b"\r\n.\r\n")
                    if end == -1:
                        break
                    tally.add(recipients, buffer[: max(end, 0)])
                    buffer, recipients, data = buffer[end + 5 :], [], False
                    replies.append(b"250 OK\r\n")
                    continue
                end = buffer.find(b"\r\n")
                if end < 0:
                    break
                line, buffer = buffer[:end], buffer[end + 2 :]
                verb = line[:4].upper()
                if verb == b"RCPT":
                    recipients.append(line[line.find(b"<") + 1 : line.rfind(b">")].decode())
                elif verb in (b"MAIL", b"RSET"):
                    recipients = []
                elif verb == b"DATA":
                    data = bool(recipients)
                replies.append(REPLIES.get(verb, b"502 Not implemented\r\n"))
                if verb == b"DATA" and not data:
                    replies[-1] = b"503 No recipients\r\n"


REPLIES = {
    b"EHLO": b"250-localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
    b"HELO": b"250 OK\r\n",
    b"NOOP": b"250 OK\r\n",
    b"MAIL": b"250 OK\r\n",
    b"RCPT": b"250 OK\r\n",
    b"RSET": b"250 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"QUIT": b"221 Bye\r\n",
}


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port):
        super().__init__(("127.0.0.1", port), Session)
        self.tally = Tally()


def serve(port):
    server = Server(port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # runs until the bench closes our standard input, then reports
    server.shutdown()
    print(json.dumps(server.tally.report()), flush=True)


class AiosmtpdCounter:
    def __init__(self):
        self.tally = Tally()

    async def handle_DATA(self, server, session, envelope):
        self.tally.add(envelope.rcpt_tos, envelope.original_content)
        return "250 OK"


def serve_aiosmtpd(port):
    from aiosmtpd.controller import Controller

    handler = AiosmtpdCounter()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()
    print(json.dumps(handler.tally.report()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aiosmtpd", action="store_true", help="Count behind aiosmtpd.")
    args = parser.parse_args()
    if args.aiosmtpd:
        serve_aiosmtpd(args.port)
    else:
        serve(args.port)


if __name__ == "__main__":
    main()
