"""What a terminal may download (the read side of distribution, used by the terminal API):
its open assignments, an exam's manifest (every SR tile expected and those ready), and the
tiles themselves, only for exams assigned to it now."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.assignments import Assignments
from catalog.errors import CatalogError
from distribution.hr_slides import HrSlides, SlideLevels, TileKey, TileSource
from schemas.catalog import AssignmentRecord
from schemas.ids import is_valid_id


class NotAssignedHere(CatalogError):
    """The exam is not (or no longer) assigned to this terminal."""

    def __init__(self, exam_id: str, terminal_id: str) -> None:
        super().__init__(f"exam {exam_id} is not assigned to terminal {terminal_id}")


class SlideNotInAssignment(CatalogError, LookupError):
    def __init__(self, exam_id: str, slide_number: int) -> None:
        super().__init__(f"slide {slide_number} is not part of the assignment of exam {exam_id}")


@dataclass(frozen=True)
class SlideManifest:
    slide: SlideLevels
    present: list[TileKey]

    @property
    def complete(self) -> bool:
        return len(self.present) == self.slide.expected


class ExamManifests:
    def __init__(self, assignments: Assignments, slides: HrSlides) -> None:
        self.assignments = assignments
        self.slides = slides

    async def open_assignments(self, terminal_id: str) -> list[AssignmentRecord]:
        """The terminal's open exams; done and reassigned ones are simply not listed."""
        return await self.assignments.of_terminal(terminal_id, state="assigned")

    async def require(self, exam_id: str, terminal_id: str) -> AssignmentRecord:
        assignment = await self.assignments.get(exam_id) if is_valid_id(exam_id) else None
        if assignment is None or assignment.state != "assigned" or assignment.terminal_id != terminal_id:
            raise NotAssignedHere(exam_id, terminal_id)
        return assignment

    async def manifest(self, exam_id: str, terminal_id: str) -> list[SlideManifest]:
        assignment = await self.require(exam_id, terminal_id)
        found = []
        for number in sorted(assignment.slide_numbers):
            slide = await self.slides.levels(exam_id, number)
            if slide is None:  # its LR record went away: nothing to offer for it
                continue
            found.append(SlideManifest(slide, sorted(await self.slides.present(slide))))
        return found

    async def tile(self, exam_id: str, slide_number: int, level: int, col: int, row: int,
                   terminal_id: str) -> tuple[bytes, TileSource] | None:
        """The tile's PNG and where it came from; None when the hr-cache does not hold it."""
        assignment = await self.require(exam_id, terminal_id)
        if slide_number not in assignment.slide_numbers:
            raise SlideNotInAssignment(exam_id, slide_number)
        slide = await self.slides.levels(exam_id, slide_number)
        return None if slide is None else await self.slides.tile(slide, level, col, row)
