"""The mount-wide memory budget: bytes of part data held by the write path.

Charged: parts handed to uploads and not yet sent, and the part each streaming file is
filling (a whole part's worth, reserved before its first byte and handed to the part
when it is cut). This is where `write()` waits when too much is held (`memory_limit`),
so the bound holds for any number of files written at once.
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


class Reservation:
    """One file's charge for the part it is filling: taken once (waiting for room), then
    handed to that part when it is cut, or released."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    async def take(self, size: int) -> None:
        if not self.held:
            self.held = await self.budget.acquire(size)

    def hand(self, size: int) -> int:
        """The charge of a part of `size` bytes just cut: the reservation (0 if none,
        or if it does not cover the part)."""
        if self.held < min(size, self.budget.limit):
            return 0
        held, self.held = self.held, 0
        return held

    def release(self) -> None:
        if self.held:
            self.budget.release(self.held)
            self.held = 0
