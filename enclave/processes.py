"""What the hub's own services share about their life as processes."""

from __future__ import annotations

import asyncio
import os


async def stop_when_orphaned(stop: asyncio.Event, every: float = 1.0) -> None:
    """Set ``stop`` once the process that started this one is gone.

    JupyterHub stops its managed services when it stops; when it is killed (``kill -9``) they would
    outlive it, holding their port, socket or writer lock, and the services of the restarted hub
    could not start. A service gone orphan stops as if asked to, finishing what it was doing.
    """
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        await asyncio.sleep(every)
