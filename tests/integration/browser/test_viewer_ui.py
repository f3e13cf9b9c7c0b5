"""The viewer UI in a real (headless) browser against the real viewer service.

One walk through a pathologist's session: sign in, open the seeded slide from the worklist, go to
40x (key 4), see placeholder tiles replaced by computed ones, compare LR upsampled vs computed
side by side, save the exam's report, and meet a save conflict.

The page exposes a read-only `window.slidestreamViewer` (documented in viewer/static/app.js) that
the test polls for tile counts and the current magnification.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.integration.browser.conftest import ViewerTarget

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Super-resolution of the first 40x tiles on a busy two-core CPU machine can take a while.
SWAP_TIMEOUT_MS = 180_000
SETTLE_TIMEOUT_MS = 90_000

DEBUG = "window.slidestreamViewer"


def _debug(page: Any) -> dict[str, Any]:
    snapshot: dict[str, Any] = page.evaluate(f"() => {DEBUG}.snapshot()")
    return snapshot


def _wait(page: Any, predicate_js: str, timeout_ms: int, what: str) -> None:
    """Wait for a JS predicate over `v` (the debug snapshot); say what was seen on timeout."""
    try:
        page.wait_for_function(f"() => {{ const v = {DEBUG}.snapshot(); return !!({predicate_js}); }}",
                               timeout=timeout_ms, polling=200)
    except Exception as exc:  # playwright's TimeoutError; the message below says what was expected
        raise AssertionError(f"timed out waiting for {what}; page state: {_debug(page)}") from exc


def _sign_in(page: Any, target: ViewerTarget) -> None:
    from playwright.sync_api import expect

    page.goto(target.url + "/")
    expect(page.locator("#login-screen")).to_be_visible()
    page.fill("#login-username", target.username)
    page.fill("#login-password", target.password)
    page.click("#login-submit")
    expect(page.locator("#login-screen")).to_be_hidden()
    expect(page.locator("#user-name")).to_have_text(target.username)
    expect(page.locator("#user-role")).to_have_text(re.compile(r"^(pathologist|technician|administrator)$"))


def _api_token(page: Any, target: ViewerTarget) -> str:
    """A token of our own (same user) for direct API calls: the page never exposes its token."""
    resp = page.request.post(f"{target.url}/api/auth/login",
                             data={"username": target.username, "password": target.password})
    assert resp.status == 200, resp.text()
    token: str = resp.json()["token"]
    return token


def _screenshot_at_40x(page: Any, path: Path) -> None:
    # Give the remaining placeholders a chance to be replaced; the picture is taken regardless.
    try:
        page.wait_for_function(f"() => {DEBUG}.pending === 0", timeout=SETTLE_TIMEOUT_MS, polling=500)
    except Exception:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=False)


def test_pathologist_session(viewer_page: Any, viewer_target: ViewerTarget, screenshot_path: Path | None) -> None:
    from playwright.sync_api import expect

    page = viewer_page
    target = viewer_target
    page_errors: list[str] = []
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    # --- sign in; the worklist lists the seeded exam and its slide ---------------------------------
    _sign_in(page, target)
    exam = page.locator(f'#worklist-list .exam[data-exam-id="{target.exam_id}"]')
    expect(exam).to_be_visible()
    slide = exam.locator(".slide-btn").first
    expect(slide).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(re.compile(r"patient name", re.I))

    # --- open the slide: LR tiles, reading mode ----------------------------------------------------
    slide.click()
    expect(slide).to_have_attribute("aria-current", "true")
    _wait(page, "v.ready && v.tilesBySource.lr > 0", 30_000, "the slide to open with LR tiles")
    state = _debug(page)
    assert state["exam"] == target.exam_id
    assert state["mode"] == "lr-on-demand"
    # The whole slide fits the screen: below the stored magnification unless the slide is small.
    assert state["view"] == ("computed" if state["level"] > state["lrLevel"] else "lr"), state
    expect(page.locator("#view-kind")).to_have_attribute("data-kind", state["view"])
    expect(page.locator("#reading-mode")).to_have_text(
        re.compile(r"^Low-resolution mode: \d+(\.\d)?x computed on demand from the stored (\d+(\.\d)?x|LR \(1/\d\))$"))

    # Record every text the progress indicator shows (it may come and go between two polls).
    page.evaluate("""() => {
        const el = document.getElementById('progress');
        window.__progressSeen = [];
        new MutationObserver(() => { if (!el.hidden && el.textContent) window.__progressSeen.push(el.textContent); })
            .observe(el, {attributes: true, childList: true, characterData: true, subtree: true});
    }""")

    # --- 40x: computed view, placeholders replaced by computed tiles --------------------------------
    page.keyboard.press("4")
    # Settled: mid-animation the view passes 39.6x, where the drawn level is still one below 40x.
    _wait(page, "v.settled && v.magnification !== null && Math.abs(v.magnification - 40) < 0.5", 10_000, "40x")
    expect(page.locator("#mag-value")).to_have_text(re.compile(r"^≈?40x$"))  # ≈: magnification not recorded
    expect(page.locator('.mag-btn[data-mag="40"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#view-kind")).to_have_attribute("data-kind", "computed")
    expect(page.locator("#view-kind")).to_contain_text("COMPUTED")
    state = _debug(page)
    assert state["view"] == "computed" and state["level"] == state["maxLevel"] > state["lrLevel"], state

    _wait(page, "v.tilesBySource.placeholder > 0", 60_000, "a placeholder tile at 40x")
    _wait(page, "v.swapped > 0 && v.tilesBySource.computed > 0", SWAP_TIMEOUT_MS,
          "a placeholder to be replaced by a computed tile")
    state = _debug(page)
    assert any(s["source"] == "computed" for s in state["recentSwaps"]), state
    seen = page.evaluate("() => window.__progressSeen")
    assert any(re.fullmatch(r"computing 40x: \d+ tiles? pending", text) for text in seen), seen

    if screenshot_path is not None:
        _screenshot_at_40x(page, screenshot_path)

    # --- comparison: two synced viewers side by side -----------------------------------------------
    page.keyboard.press("c")
    lr_pane, main_pane = page.locator("#pane-lr"), page.locator("#pane-main")
    expect(lr_pane).to_be_visible()
    expect(main_pane).to_be_visible()
    expect(page.locator("#compare-toggle")).to_have_attribute("aria-pressed", "true")
    expect(lr_pane.locator(".pane-label")).to_have_text("LR upsampled")
    expect(main_pane.locator(".pane-label")).to_have_text("computed")
    expect(lr_pane.locator("canvas").first).to_be_visible()
    expect(main_pane.locator("canvas").first).to_be_visible()
    _wait(page, "v.compare && v.lrTilesLoaded > 0", 30_000, "LR tiles in the comparison viewer")
    lr_box, main_box = lr_pane.bounding_box(), main_pane.bounding_box()
    assert lr_box and main_box and lr_box["x"] + lr_box["width"] <= main_box["x"] + 1, (lr_box, main_box)
    assert lr_box["width"] > 300 and main_box["width"] > 300
    # Still 40x after the layout change, and panning the main viewer moves both.
    _wait(page, "v.settled && Math.abs(v.magnification - 40) < 0.5", 5_000, "40x kept in comparison")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("c")
    expect(lr_pane).to_be_hidden()

    # --- report: save, then a stale save meets the conflict ---------------------------------------
    form = page.locator("#report-form")
    expect(form).to_be_visible()
    expect(page.locator("#report-save")).to_be_enabled()
    before = _debug(page)["report"]["revision"]
    findings = f"Browser test findings {uuid.uuid4().hex[:8]}"
    page.fill("#report-findings", findings)
    page.fill("#report-diagnosis", "No evidence of malignancy (browser test).")
    page.select_option("#report-status", "draft")
    page.click("#report-save")
    expected_revision = 0 if before is None else before + 1  # a new report is revision 0
    expect(page.locator("#report-message")).to_have_text(re.compile(rf"^Saved — revision {expected_revision}\b"))
    expect(page.locator("#report-meta")).to_contain_text(f"Revision {expected_revision}")
    assert _debug(page)["report"]["revision"] == expected_revision

    token = _api_token(page, target)
    headers = {"Authorization": f"Bearer {token}"}
    stored = page.request.get(f"{target.url}/api/exams/{target.exam_id}/report", headers=headers)
    assert stored.status == 200, stored.text()
    assert stored.json()["findings"] == findings
    assert stored.json()["revision"] == expected_revision

    # Someone else saves first, from the same revision the page holds.
    other = page.request.put(
        f"{target.url}/api/exams/{target.exam_id}/report",
        headers=headers,
        data={"findings": "Saved elsewhere first", "diagnosis": "other", "body_part": "", "status": "draft",
              "expected_revision": expected_revision},
    )
    assert other.status == 200, other.text()
    page.fill("#report-findings", findings + " (edited)")
    page.click("#report-save")
    conflict = page.locator("#report-conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("Conflict")
    expect(page.locator("#report-message")).to_have_text("Not saved: conflict")
    page.click("#report-reload")
    expect(conflict).to_be_hidden()
    expect(page.locator("#report-findings")).to_have_value("Saved elsewhere first")
    expect(page.locator("#report-meta")).to_contain_text(f"Revision {expected_revision + 1}")

    # --- no silent failures ------------------------------------------------------------------------
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not page_errors:
        page.wait_for_timeout(100)
    assert not page_errors, page_errors
    errors = _debug(page)["errors"]
    assert not errors, {"notices": errors, "console": console_errors}
