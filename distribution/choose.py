"""Which terminal reads an exam: a pure decision over the terminals and their load today.

* only online, active terminals that read the exam's task class are candidates;
* with ``prefer_owner``, a candidate owned by the exam's pathologist (then one owned by its
  department) wins while it has room for the exam's slides today;
* otherwise the candidate with the lowest load / capacity that has room, ties by id;
* if none has room, the least loaded candidate anyway, marked ``over_capacity``: an exam is
  never left waiting while a terminal that can read it is online;
* no candidate: the exam waits (the sweep assigns it when one comes online).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Candidate:
    """A terminal as the decision sees it; ``load``: slides given to it today."""

    terminal_id: str
    task_classes: frozenset[str]
    capacity: int
    load: int
    owner_kind: str = "department"  # "user" or "department"
    owner: str = ""
    online: bool = True
    active: bool = True

    def room_for(self, slides: int) -> bool:
        return self.load + slides <= self.capacity

    def ratio(self) -> Fraction:  # exact: no float ties decided by rounding
        return Fraction(self.load, self.capacity)


@dataclass(frozen=True)
class ExamNeed:
    task_class: str
    slides: int
    pathologist: str | None = None
    department: str | None = None


@dataclass(frozen=True)
class Choice:
    terminal_id: str | None  # None: waiting
    over_capacity: bool = False
    by_owner: bool = False

    @property
    def waiting(self) -> bool:
        return self.terminal_id is None


WAITING = Choice(None)


def _owner_rank(exam: ExamNeed, c: Candidate) -> int | None:
    """0: the exam's pathologist's terminal, 1: its department's, None: neither."""
    if c.owner_kind == "user" and exam.pathologist is not None and c.owner == exam.pathologist:
        return 0
    if c.owner_kind == "department" and exam.department is not None and c.owner.casefold() == exam.department.casefold():
        return 1
    return None


def choose(exam: ExamNeed, terminals: Iterable[Candidate], *, prefer_owner: bool) -> Choice:
    matching = [c for c in terminals if c.online and c.active and exam.task_class in c.task_classes]
    if not matching:
        return WAITING
    with_room = [c for c in matching if c.room_for(exam.slides)]
    if prefer_owner:
        owned = [(rank, c) for c in with_room if (rank := _owner_rank(exam, c)) is not None]
        if owned:
            _, best = min(owned, key=lambda rc: (rc[0], rc[1].ratio(), rc[1].terminal_id))
            return Choice(best.terminal_id, by_owner=True)
    if with_room:
        return Choice(min(with_room, key=lambda c: (c.ratio(), c.terminal_id)).terminal_id)
    least = min(matching, key=lambda c: (c.ratio(), c.terminal_id))
    return Choice(least.terminal_id, over_capacity=True)
