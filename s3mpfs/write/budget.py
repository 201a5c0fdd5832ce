"""The mount-wide memory budget: bytes of parts handed to uploads and not yet sent.

This is where `write()` waits when too much is in flight (`memory_limit`).
"""

from __future__ import annotations

import trio


class MemoryBudget:
    """Bytes of part data handed to the driver but not yet uploaded, across the mount.

    A part larger than the whole budget is charged as the whole budget, so it proceeds
    alone instead of waiting forever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lot = trio.lowlevel.ParkingLot()

    async def acquire(self, size: int) -> int:
        charge = min(size, self.limit)
        while self.used + charge > self.limit:
            await self._lot.park()
        self.used += charge
        return charge

    def release(self, charge: int) -> None:
        self.used -= charge
        self._lot.unpark_all()
