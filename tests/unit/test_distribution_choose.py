"""Choosing a terminal: examples of each rule, then properties over random fleets (Hypothesis):
only an online, active terminal of the task class; never waiting while one is online;
capacity respected unless every candidate is full; the owner first; deterministic."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from distribution.choose import Candidate, ExamNeed, choose


def term(tid: str, load: int = 0, capacity: int = 10, *, classes: tuple[str, ...] = ("gi",), online: bool = True,
         active: bool = True, owner_kind: str = "department", owner: str = "GI pathology") -> Candidate:
    return Candidate(tid, frozenset(classes), capacity, load, owner_kind, owner, online, active)


GI = ExamNeed("gi", 2, pathologist="dr.a", department="Surgical")


def test_lowest_load_ratio_with_room_wins_ties_by_id() -> None:
    fleet = [term("t3", 5, 10), term("t1", 3, 4), term("t2", 1, 2)]
    assert choose(GI, fleet, prefer_owner=False).terminal_id == "t3"  # t2 (as low) and t1 lack room for 2
    fleet = [term("t3", 4, 10), term("t1", 4, 10), term("t2", 6, 10)]
    assert choose(GI, fleet, prefer_owner=False).terminal_id == "t1"


def test_other_task_classes_offline_and_retired_terminals_are_never_chosen() -> None:
    fleet = [term("derm", classes=("derm",)), term("off", online=False), term("gone", active=False)]
    choice = choose(GI, fleet, prefer_owner=True)
    assert choice.waiting and choice.terminal_id is None


def test_all_full_goes_to_the_least_loaded_over_capacity() -> None:
    fleet = [term("a", 10, 10), term("b", 9, 10), term("c", 19, 20)]
    choice = choose(GI, fleet, prefer_owner=False)
    assert (choice.terminal_id, choice.over_capacity) == ("b", True)


def test_owner_terminal_first_pathologist_before_department() -> None:
    fleet = [term("idle", 0), term("dept", 5, owner="surgical"),
             term("mine", 8, owner_kind="user", owner="dr.a")]
    assert choose(GI, fleet, prefer_owner=True).terminal_id == "mine"
    assert choose(GI, fleet[:2], prefer_owner=True).terminal_id == "dept"  # department names: any case
    assert choose(GI, fleet, prefer_owner=False).terminal_id == "idle"


def test_a_full_owner_terminal_does_not_take_it_while_another_has_room() -> None:
    fleet = [term("mine", 9, owner_kind="user", owner="dr.a"), term("other", 3)]
    choice = choose(GI, fleet, prefer_owner=True)
    assert (choice.terminal_id, choice.over_capacity, choice.by_owner) == ("other", False, False)


# --- properties ---------------------------------------------------------------------------

candidates = st.builds(
    term,
    tid=st.text("abcdef", min_size=1, max_size=3),
    load=st.integers(0, 30),
    capacity=st.integers(1, 20),
    classes=st.lists(st.sampled_from(["gi", "derm", "general"]), min_size=1, max_size=3, unique=True).map(tuple),
    online=st.booleans(),
    active=st.booleans(),
    owner_kind=st.sampled_from(["user", "department"]),
    owner=st.sampled_from(["dr.a", "dr.b", "Surgical", "Derm"]),
)
fleets = st.lists(candidates, max_size=8, unique_by=lambda c: c.terminal_id)
needs = st.builds(ExamNeed, task_class=st.sampled_from(["gi", "derm", "general"]), slides=st.integers(1, 8),
                  pathologist=st.sampled_from([None, "dr.a", "dr.b"]),
                  department=st.sampled_from([None, "Surgical", "surgical", "Derm"]))


def matching(need: ExamNeed, fleet: list[Candidate]) -> list[Candidate]:
    return [c for c in fleet if c.online and c.active and need.task_class in c.task_classes]


@given(needs, fleets, st.booleans())
def test_one_matching_terminal_unless_none_is_online(need: ExamNeed, fleet: list[Candidate], prefer: bool) -> None:
    choice = choose(need, fleet, prefer_owner=prefer)
    ok = matching(need, fleet)
    if not ok:
        assert choice.waiting
        return
    assert choice.terminal_id in {c.terminal_id for c in ok}  # exactly one, and a matching one


@given(needs, fleets, st.booleans())
def test_capacity_is_respected_unless_every_match_is_full(need: ExamNeed, fleet: list[Candidate],
                                                         prefer: bool) -> None:
    choice = choose(need, fleet, prefer_owner=prefer)
    ok = matching(need, fleet)
    if choice.waiting:
        return
    chosen = next(c for c in ok if c.terminal_id == choice.terminal_id)
    anyone_has_room = any(c.load + need.slides <= c.capacity for c in ok)
    assert choice.over_capacity == (not anyone_has_room)
    if anyone_has_room:
        assert chosen.load + need.slides <= chosen.capacity
    else:  # the least loaded of the full ones
        assert chosen.ratio() == min(c.ratio() for c in ok)


@given(needs, fleets)
def test_without_owner_preference_the_lowest_ratio_with_room_wins(need: ExamNeed, fleet: list[Candidate]) -> None:
    choice = choose(need, fleet, prefer_owner=False)
    roomy = [c for c in matching(need, fleet) if c.load + need.slides <= c.capacity]
    if roomy:
        best = min((Fraction(c.load, c.capacity), c.terminal_id) for c in roomy)
        assert choice.terminal_id == best[1]


@given(needs, fleets)
def test_an_owner_terminal_with_room_is_preferred(need: ExamNeed, fleet: list[Candidate]) -> None:
    choice = choose(need, fleet, prefer_owner=True)

    def owns(c: Candidate) -> bool:
        return ((c.owner_kind == "user" and c.owner == need.pathologist)
                or (c.owner_kind == "department" and need.department is not None
                    and c.owner.casefold() == need.department.casefold()))

    owned = [c for c in matching(need, fleet) if owns(c) and c.load + need.slides <= c.capacity]
    if owned:
        assert choice.by_owner and choice.terminal_id in {c.terminal_id for c in owned}
        users = [c for c in owned if c.owner_kind == "user"]
        if users:
            assert choice.terminal_id in {c.terminal_id for c in users}
    else:
        assert not choice.by_owner


@given(needs, fleets, st.booleans(), st.randoms())
def test_the_order_of_the_fleet_does_not_matter(need: ExamNeed, fleet: list[Candidate], prefer: bool,
                                                rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(fleet)
    rnd.shuffle(shuffled)
    assert choose(need, fleet, prefer_owner=prefer) == choose(need, shuffled, prefer_owner=prefer)
