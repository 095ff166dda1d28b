"""A watcher process for the crash tests: `python -m tests.e2e.watcher_child URL KEY
CHECKPOINT LOG`. Its handler appends `<position> <id>` to LOG (flushed to disk) and
returns; the watcher keeps its position in CHECKPOINT. It is killed with SIGKILL at any
moment, and stopped with SIGTERM at the end."""

from __future__ import annotations

import os
import sys

from waypost_client import Client, FileCheckpoint, Message, RetryPolicy, Watcher


def main() -> None:
    url, key, checkpoint, log = sys.argv[1:5]
    with (
        open(log, "a", encoding="ascii") as out,
        Client(url, key, retry=RetryPolicy(attempts=1000, longest=1.0, budget=120)) as client,
    ):

        def handle(message: Message) -> None:
            out.write(f"{message.position} {message.id}\n")
            out.flush()
            os.fsync(out.fileno())

        Watcher(
            client,
            handle,
            checkpoint=FileCheckpoint(checkpoint),
            after=0,
            reconnect_backoff=(0.05, 0.5),
        ).run()


if __name__ == "__main__":
    main()
