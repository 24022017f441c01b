"""What the domain refuses, each naming the field a client has to fix."""

from __future__ import annotations


class Refused(ValueError):
    """Bad input: nothing changed, and ``field`` says what to correct."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Conflict(Exception):
    """The input is well formed but the current state does not allow it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NoFreeSlot(Conflict):
    def __init__(self, point_id: str, capacity: int, occupied: int) -> None:
        super().__init__("point_id", f"{point_id} has no free slot ({occupied} of {capacity})")
        self.point_id = point_id
        self.capacity = capacity
        self.occupied = occupied


class InvalidTransition(Exception):
    def __init__(self, status: str, move: str, why: str = "") -> None:
        text = f"a booking that is {status} cannot {move}"
        super().__init__(f"{text}: {why}" if why else text)
        self.status = status
        self.move = move
