"""Remembering which examples an export has already written, in 8 bytes per example.

A Python set of a million ints costs about 80 MiB; an export of millions of rows must stay
flat in memory, so this is an open-addressing hash set of 64-bit digests in an `array('Q')`
(about 16 bytes per entry at the load it keeps). A 64-bit digest of SHA-256 makes an accidental
collision among 10^7 examples about 1 in 400,000."""

from __future__ import annotations

from array import array


class SeenDigests:
    def __init__(self, capacity: int = 1 << 16) -> None:
        size = 1
        while size < capacity:
            size <<= 1
        self._slots = array("Q", bytes(8 * size))
        self._mask = size - 1
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, digest: int) -> bool:
        """Add a 64-bit digest; True if it was new, False if it was already there."""
        digest = digest or 1  # 0 marks an empty slot
        slots, mask = self._slots, self._mask
        index = digest & mask
        while True:
            current = slots[index]
            if current == 0:
                break
            if current == digest:
                return False
            index = (index + 1) & mask
        slots[index] = digest
        self.count += 1
        if self.count * 2 > len(slots):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        slots, mask = self._slots, self._mask
        for digest in old:
            if digest:
                index = digest & mask
                while slots[index]:
                    index = (index + 1) & mask
                slots[index] = digest
