"""A real SMTP server on loopback for the mail tests: aiosmtpd, saving every message
it receives as an .eml file in the given folder. Prints the port once it listens."""
import pathlib
import socket
import sys
import time

from aiosmtpd.controller import Controller


class SaveToFolder:
    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        recipients = ",".join(envelope.rcpt_tos)
        body = envelope.original_content or envelope.content
        (self.folder / f"{self.count:04d}.eml").write_bytes(
            f"X-Envelope-To: {recipients}\r\n".encode() + body
        )
        return "250 Message accepted"


# aiosmtpd cannot start on port 0: take a free port from the kernel first.
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
controller = Controller(SaveToFolder(sys.argv[1]), hostname="127.0.0.1", port=port)
controller.start()
print(port, flush=True)
try:
    time.sleep(int(sys.argv[2]) if len(sys.argv) > 2 else 300)
finally:
    controller.stop()
