"""The lab's learning colour standard: only clean passes teach it, every worker's update
survives concurrent writers, a damaged file is never overwritten, and changes made by another
process are picked up without re-reading the file for every slide."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

import quality.lab_standard as lab_module
from quality.lab_standard import LabStandard, LabStandardError, learnable_descriptor, read_standard
from quality.report import CheckResult, QcReport, not_judged
from quality.standard import SHIPPED, load_standard

SEED = load_standard(SHIPPED)
FORK = multiprocessing.get_context("fork")  # children inherit the test's state; nothing to re-import


def slide(offset: float = 2.0, seed: int = 0) -> np.ndarray:
    """A plausible H&E descriptor near the shipped standard."""
    return SEED.mean + offset + np.random.default_rng(seed).normal(0, 0.5, SEED.mean.shape)


def report(descriptor: np.ndarray, *, blur_passes: bool = True, colour_score: float = 0.4, stain: str = "he",
           corrected: bool = False, colour_judged: bool = True) -> QcReport:
    tissue = CheckResult("tissue", 0.4, 0.01, True, "tissue covers 40%", details={"stain": stain})
    if colour_judged:
        colour = CheckResult("colour_cast", colour_score, 1.0, colour_score <= 1.0 or corrected, "colour",
                             details={"descriptor": [float(v) for v in descriptor]} | ({"corrected": True} if corrected else {}))
    else:
        colour = not_judged("colour_cast", "not an H&E stain")
    blur = CheckResult("blur", 0.0 if blur_passes else 0.8, 0.25, blur_passes, "blur")
    return QcReport([tissue, colour, blur], 1000, 1000, 0.25, 40.0, "sampled", 0.4, 4, 4, {})


def test_a_clean_pass_moves_the_mean_toward_the_slide_and_is_persisted(tmp_path: Path) -> None:
    path = tmp_path / "qc" / "lab.json"
    lab = LabStandard(path)
    before = lab.current()
    assert np.allclose(before.mean, SEED.mean) and not path.exists()  # judged against the seed until a slide passes
    x = slide()
    learned = lab.learn_from(report(x))
    assert learned is not None and learned.count == SEED.count + 1
    assert np.allclose(learned.mean, SEED.mean + (x - SEED.mean) / (SEED.count + 1))
    assert np.linalg.norm(learned.mean - x) < np.linalg.norm(SEED.mean - x)
    _, persisted = read_standard(path)  # on disk, for every other worker
    assert np.array_equal(persisted.mean, learned.mean) and persisted.count == learned.count
    assert persisted.name == "lab (from he_default)" and persisted.scale == SEED.scale
    assert LabStandard(path).current().count == SEED.count + 1


NOT_LEARNABLE = {
    "verdict failed (blur)": {"blur_passes": False},
    "colour beyond the limit": {"colour_score": 1.4},
    "colour passed only after normalisation": {"colour_score": 1.3, "corrected": True},
    "not H&E (colour not judged)": {"stain": "non_he", "colour_judged": False},
    "stain not recognised": {"stain": "unknown"},
}


@pytest.mark.parametrize("case", NOT_LEARNABLE)
def test_a_slide_that_did_not_pass_cleanly_never_changes_the_standard(tmp_path: Path, case: str) -> None:
    lab = LabStandard(tmp_path / "lab.json")
    bad = report(slide(offset=8.0), **NOT_LEARNABLE[case])  # type: ignore[arg-type]
    assert learnable_descriptor(bad) is None
    assert lab.learn_from(bad) is None and not lab.path.exists()  # no file is made for it either
    lab.learn_from(report(slide()))
    written = lab.path.read_bytes()
    assert lab.learn_from(bad) is None
    assert lab.path.read_bytes() == written
    assert learnable_descriptor(report(slide())) is not None  # the same report, passing cleanly, would teach


def test_a_slide_without_a_usable_descriptor_teaches_nothing(tmp_path: Path) -> None:
    lab = LabStandard(tmp_path / "lab.json")
    assert lab.learn_from(report(np.full(SEED.mean.shape, np.nan))) is None and not lab.path.exists()


def test_learning_switched_off_keeps_the_file_as_it_is(tmp_path: Path) -> None:
    LabStandard(tmp_path / "lab.json").learn_from(report(slide()))
    written = (tmp_path / "lab.json").read_bytes()
    frozen = LabStandard(tmp_path / "lab.json", learn=False)
    assert frozen.learn_from(report(slide(seed=1))) is None
    assert (tmp_path / "lab.json").read_bytes() == written
    assert frozen.current().count == SEED.count + 1  # still judged against the lab's standard


def test_the_seed_can_be_a_configured_standard(tmp_path: Path) -> None:
    from dataclasses import replace

    from quality.standard import save_standard

    own = replace(SEED, mean=SEED.mean + 1.0, count=50.0, name="hospital_a")
    save_standard(own, tmp_path / "own.json")
    lab = LabStandard(tmp_path / "lab.json", tmp_path / "own.json")
    assert np.array_equal(lab.current().mean, own.mean)
    assert lab.fold_in(slide()).count == 51.0


def _fold_many(path: Path, seeds: range, barrier: object) -> None:
    lab = LabStandard(path)
    barrier.wait()  # type: ignore[attr-defined]  # both writers start together
    for seed in seeds:
        lab.fold_in(slide(seed=seed))


def test_two_processes_folding_concurrently_lose_no_update(tmp_path: Path) -> None:
    path, n = tmp_path / "lab.json", 30
    barrier = FORK.Barrier(2)
    workers = [FORK.Process(target=_fold_many, args=(path, range(i * n, (i + 1) * n), barrier)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    _, final = read_standard(path)  # parseable, not torn
    assert final.count == SEED.count + 2 * n
    # Below the memory every fold is an exact running mean, whatever the order: all 2N slides are in it.
    everything = np.array([slide(seed=s) for s in range(2 * n)])
    assert np.allclose(final.mean, (SEED.mean * SEED.count + everything.sum(axis=0)) / (SEED.count + 2 * n))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.json", "lab.json.lock"]  # no temporary file left


def test_a_damaged_file_is_reported_by_name_and_never_overwritten(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "lab.json"
    path.write_bytes(b'{"name": "lab", "mean": [1.0, 2.')  # e.g. edited by hand, or a disk fault
    lab = LabStandard(path)
    with caplog.at_level(logging.ERROR, logger="quality.lab_standard"):
        standard = lab.current()
        lab.current()
    # QC goes on against the calibrated seed (see LabStandard.current for why), saying so.
    assert np.array_equal(standard.mean, SEED.mean) and standard.name == SEED.name
    assert len(caplog.records) == 1 and str(path) in caplog.records[0].getMessage()  # once per damaged version
    with pytest.raises(LabStandardError, match=str(path)):
        lab.learn_from(report(slide()))
    assert path.read_bytes() == b'{"name": "lab", "mean": [1.0, 2.'  # left for repair


def test_non_finite_values_are_damage_too(tmp_path: Path) -> None:
    path = tmp_path / "lab.json"
    LabStandard(path).fold_in(slide())
    path.write_text(path.read_text().replace('"scale": ', '"scale": NaN, "x": ', 1))
    with pytest.raises(LabStandardError, match="lab.json"):
        read_standard(path)


def _fold_one(path: Path) -> None:
    LabStandard(path).fold_in(slide(seed=7))


def test_a_change_by_another_process_is_picked_up_and_an_unchanged_file_is_not_reread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lab.json"
    lab = LabStandard(path)
    lab.fold_in(slide())
    reads: list[Path] = []

    def counting(p: Path) -> tuple[lab_module.Signature, object]:
        reads.append(p)
        return read_standard(p)

    monkeypatch.setattr(lab_module, "read_standard", counting)
    for _ in range(5):
        assert lab.current().count == SEED.count + 1
    assert reads == []  # this worker's own write is already known: one stat per slide, no read
    other = FORK.Process(target=_fold_one, args=(path,))
    other.start()
    other.join(timeout=60)
    assert other.exitcode == 0
    assert lab.current().count == SEED.count + 2
    assert lab.current().count == SEED.count + 2
    assert len(reads) == 1
    path.unlink()  # reset by the operator
    assert lab.current().count == SEED.count
