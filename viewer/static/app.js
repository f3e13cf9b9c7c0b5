// slidestream viewer: sign-in, worklist/search, slide viewer with live super-resolution, report.
//
// Plain ES modules, no framework. Served at /static/, OpenSeadragon at /vendor/openseadragon/.
//
// ---------------------------------------------------------------------------------------------
// window.slidestreamViewer: a small READ-ONLY debug view of the page, for tests and support.
// Every property is a getter that returns a fresh copy; nothing on it changes the page.
//
//   signedIn       boolean
//   user           {username, role, department} | null
//   exam           exam_id of the open exam | null
//   slide          {exam_id, slide_number} of the open slide | null
//   ready          true once the open slide's image is open in the viewer
//   tilesBySource  {lr, placeholder, computed, scanned, other}: tile answers of the main viewer,
//                  counted by their X-Tile-Source header (re-used cached tiles are not counted)
//   pending        placeholder tiles the viewer holds now whose real tile has not replaced them
//                  yet (failed ones excluded): the N of "computing 40x: N tiles pending"
//   pendingTiles   up to 50 of them: [{level, col, row, ageMs}] (ageMs: since their last answer)
//   swapped        placeholders replaced on screen by a real (computed/scanned) tile
//   recentSwaps    last swaps: [{level, col, row, source, at}]
//   failed         tiles the server reported as failed (they keep the LR placeholder)
//   flagged        computed tiles seen whose consistency with the stored LR is below the
//                  slide's threshold (outlined): [{key: "level/col/row", db}]
//   magnification  current magnification (number, e.g. 40) | null
//   level          pyramid level the view draws | null
//   lrLevel, maxLevel  deepest level cut from the stored LR / deepest level of the pyramid
//   fullMagnification  magnification of maxLevel (e.g. 40) | null
//   view           "computed" (super-resolved level) | "scanned" (real scan) | "lr" (stored LR) | null
//   mode           reading mode: "lr-on-demand" (40x computed on demand from the stored LR; no
//                  terminal-local cache in this version) | null when no slide is open
//   compare        comparison (LR upsampled | computed side by side) on
//   lrTilesLoaded  tiles loaded by the comparison's LR viewer
//   events         live event stream: "connecting" | "open" | "retrying" | "closed"
//   viewportReports  views reported to the server for prefetch (POST …/viewport), this page
//   report         {exam, revision, status, dirty, message, conflict}
//   errors         messages of the error notices on screen
//   snapshot()     all of the above as one plain object
// ---------------------------------------------------------------------------------------------

import { api, ApiError, getText, request, session } from "./api.js";
import { openEventStream } from "./events.js";
import { ReportForm } from "./report.js";
import { formatMag, parseDzi, SlideView } from "./slideview.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 50;
const JUMP_MAGS = [5, 10, 20, 40];

const state = {
  user: null,
  tab: "worklist",
  lists: {
    worklist: { offset: 0, total: 0, query: { worklist: "true" }, seq: 0, exams: [] },
    search: { offset: 0, total: 0, query: null, seq: 0, exams: [] },
  },
  exam: null,
  slideInfo: null,
  view: null,
  stream: null,
  events: "closed",
  compare: false,
  openSeq: 0,
  opening: false,
};

// ---- notices ------------------------------------------------------------------------------------

const notices = new Map(); // key -> element

/**
 * Show a notice. Errors stay until dismissed; a notice with the same key replaces the old one.
 * @param {string} text
 * @param {{kind?: "error"|"warning"|"info", key?: string, timeoutMs?: number, action?: {label: string, run: () => void}}} [opts]
 */
function notify(text, { kind = "error", key = text, timeoutMs, action } = {}) {
  dismiss(key);
  const el = document.createElement("div");
  el.className = `notice notice-${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  const msg = document.createElement("span");
  msg.className = "notice-text";
  msg.textContent = text;
  el.append(msg);
  if (action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = action.label;
    b.addEventListener("click", () => {
      dismiss(key);
      action.run();
    });
    el.append(b);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "notice-close";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.addEventListener("click", () => dismiss(key));
  el.append(close);
  $("notices").append(el);
  notices.set(key, el);
  const ms = timeoutMs ?? (kind === "info" ? 6000 : 0);
  if (ms) setTimeout(() => notices.get(key) === el && dismiss(key), ms);
}

function dismiss(key) {
  const el = notices.get(key);
  if (el) el.remove();
  notices.delete(key);
}

function clearNotices() {
  for (const key of [...notices.keys()]) dismiss(key);
}

function errorText(err) {
  if (err instanceof ApiError) return err.detail;
  return err && err.message ? err.message : String(err);
}

window.addEventListener("unhandledrejection", (e) => {
  const err = e.reason;
  if (err && err.name === "AbortError") return;
  notify(`Unexpected error: ${errorText(err)}`, { key: "unexpected" });
});
window.addEventListener("error", (e) => {
  if (e.error) notify(`Unexpected error: ${errorText(e.error)}`, { key: "unexpected" });
});

// ---- sign-in ------------------------------------------------------------------------------------

function showLogin(reason) {
  $("login-screen").hidden = false;
  const r = $("login-reason");
  r.textContent = reason || "";
  r.hidden = !reason;
  $("login-error").textContent = "";
  $("login-password").value = "";
  $("login-submit").disabled = false;
  const user = $("login-username");
  (user.value ? $("login-password") : user).focus();
}

async function onLoginSubmit(e) {
  e.preventDefault();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  const error = $("login-error");
  error.textContent = "";
  if (!username || !password) {
    error.textContent = "Enter your user name and password.";
    return;
  }
  $("login-submit").disabled = true;
  try {
    const previous = state.user ? state.user.username : null;
    const user = await session.login(username, password);
    $("login-screen").hidden = true;
    $("login-password").value = "";
    if (previous && previous === user.username) {
      resumeAfterSignIn();
    } else {
      resetWorkspace();
      enterApp(user);
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      error.textContent = `Sign-in refused: ${err.detail}`;
    } else if (err instanceof ApiError && err.status === 429) {
      const after = Number(err.headers && err.headers.get("Retry-After"));
      error.textContent = "Too many failed sign-ins." +
        (Number.isFinite(after) && after > 0 ? ` Try again in ${Math.ceil(after)} s.` : " Try again later.");
    } else {
      error.textContent = `Sign-in failed: ${errorText(err)}`;
    }
  } finally {
    $("login-submit").disabled = false;
  }
}

function enterApp(user) {
  state.user = user;
  $("app").hidden = false;
  $("user-name").textContent = user.username;
  $("user-role").textContent = user.role;
  $("user-role").dataset.role = user.role;
  $("user-department").textContent = user.department ? `· ${user.department}` : "";
  selectTab("worklist");
  loadList("worklist");
}

/** Same user signed in again after expiry: reconnect what needed the old token. */
function resumeAfterSignIn() {
  if (state.slideInfo && state.exam) {
    // Tiles refused while signed out are not retried by OpenSeadragon: open the slide again where it was.
    openSlide(state.exam, state.slideInfo.slide_number, { force: true, keepBounds: true }).catch(() => {});
  }
  loadList(state.tab);
}

function resetWorkspace() {
  closeSlide();
  report.clear();
  clearNotices();
  for (const name of ["worklist", "search"]) {
    const l = state.lists[name];
    l.offset = 0;
    l.total = 0;
    l.exams = [];
    $(`${name}-list`).replaceChildren();
    $(`${name}-status`).textContent = "";
    $(`${name}-pager`).hidden = true;
  }
  state.lists.search.query = null;
  $("search-form").reset();
}

function signOut() {
  if (report.dirty && !window.confirm("The report has unsaved changes. Sign out anyway?")) return;
  session.signOut();
  resetWorkspace();
  state.user = null;
  $("app").hidden = true;
  showLogin("Signed out.");
}

session.onExpired((reason) => {
  // Keep the workspace (and any unsaved report text) behind the sign-in screen.
  if (state.stream) {
    state.stream.close();
    state.stream = null;
  }
  showLogin(reason);
});

session.onToken(() => {
  if (state.view) state.view.setAuthHeaders(session.authHeaders());
});

// ---- worklist and search ------------------------------------------------------------------------

function selectTab(name) {
  state.tab = name;
  for (const t of ["worklist", "search"]) {
    $(`tab-${t}`).setAttribute("aria-selected", String(t === name));
    $(`${t}-panel`).hidden = t !== name;
  }
}

async function loadList(name) {
  const list = state.lists[name];
  if (!list.query) return;
  const seq = ++list.seq;
  const status = $(`${name}-status`);
  status.textContent = "Loading…";
  status.dataset.kind = "info";
  try {
    const data = await api.exams({ ...list.query, limit: PAGE_SIZE, offset: list.offset });
    if (seq !== list.seq) return;
    if (!data || !Array.isArray(data.exams)) throw new ApiError(0, "Unexpected answer from /api/exams");
    list.exams = data.exams;
    list.total = Number.isFinite(data.total) ? data.total : data.exams.length;
    renderList(name);
  } catch (err) {
    if (seq !== list.seq) return;
    status.textContent = `Could not load exams: ${errorText(err)}`;
    status.dataset.kind = "error";
  }
}

function renderList(name) {
  const list = state.lists[name];
  const ul = $(`${name}-list`);
  ul.replaceChildren(...list.exams.map(examItem));
  const status = $(`${name}-status`);
  status.dataset.kind = "";
  if (!list.exams.length) {
    status.textContent = name === "worklist" ? "Your worklist is empty." : "No exams match.";
  } else {
    const from = list.offset + 1;
    const to = list.offset + list.exams.length;
    status.textContent = `${from}–${to} of ${list.total} exam${list.total === 1 ? "" : "s"}`;
  }
  const pager = $(`${name}-pager`);
  pager.hidden = list.total <= PAGE_SIZE;
  pager.querySelector('[data-dir="-1"]').disabled = list.offset === 0;
  pager.querySelector('[data-dir="1"]').disabled = list.offset + PAGE_SIZE >= list.total;
  markCurrentSlide();
}

function fmtDate(iso) {
  if (!iso) return "no date";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().slice(0, 10);
}

function examItem(exam) {
  const li = document.createElement("li");
  li.className = "exam";
  li.dataset.examId = exam.exam_id;

  const head = document.createElement("div");
  head.className = "exam-head";
  const id = document.createElement("span");
  id.className = "exam-id";
  id.textContent = exam.exam_id;
  const badge = document.createElement("span");
  badge.className = "report-badge";
  badge.dataset.status = exam.report_status || "none";
  badge.textContent = exam.report_status === "none" || !exam.report_status ? "no report" : exam.report_status;
  head.append(id, badge);

  const meta = document.createElement("div");
  meta.className = "exam-meta";
  const parts = [`Patient ${exam.patient_id}`, exam.body_part || "body part not set", fmtDate(exam.exam_date)];
  const who = [exam.pathologist, exam.department].filter(Boolean).join(" / ");
  if (who) parts.push(who);
  meta.textContent = parts.join(" · ");

  const slides = document.createElement("ul");
  slides.className = "slides";
  for (const s of exam.slides || []) {
    const sli = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "slide-btn";
    b.dataset.examId = exam.exam_id;
    b.dataset.slideNumber = String(s.slide_number);
    const dims = s.width && s.height ? ` · ${s.width}×${s.height}` : "";
    const mag = s.magnification ? ` · ${formatMag(s.magnification)}` : "";
    b.textContent = `Slide ${s.slide_number}${dims}${mag}`;
    b.addEventListener("click", () => {
      openSlide(exam, s.slide_number).catch(() => {});
    });
    sli.append(b);
    slides.append(sli);
  }
  if (!(exam.slides || []).length) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "No slides";
    slides.append(none);
  }
  li.append(head, meta, slides);
  return li;
}

function markCurrentSlide() {
  const cur = state.slideInfo;
  for (const b of document.querySelectorAll(".slide-btn")) {
    const on = !!cur && b.dataset.examId === cur.exam_id && b.dataset.slideNumber === String(cur.slide_number);
    if (on) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

function onSearchSubmit(e) {
  e.preventDefault();
  const f = new FormData($("search-form"));
  const query = {};
  for (const k of ["patient_id", "exam_id", "body_part", "date_from", "date_to"]) {
    const v = String(f.get(k) || "").trim();
    if (v) query[k] = v;
  }
  const status = $("search-status");
  if (query.date_from && query.date_to && query.date_from > query.date_to) {
    status.textContent = "The start date is after the end date.";
    status.dataset.kind = "error";
    return;
  }
  const list = state.lists.search;
  list.query = query;
  list.offset = 0;
  loadList("search");
}

function page(name, dir) {
  const list = state.lists[name];
  list.offset = Math.max(0, list.offset + dir * PAGE_SIZE);
  loadList(name);
}

// ---- slide viewer -------------------------------------------------------------------------------

function closeSlide() {
  state.openSeq++;
  if (state.stream) state.stream.close();
  state.stream = null;
  state.events = "closed";
  if (state.view) state.view.destroy();
  state.view = null;
  state.slideInfo = null;
  state.exam = null;
  $("viewer-empty").hidden = false;
  $("slide-title").textContent = "No slide open";
  for (const id of ["mag-indicator", "mag-buttons", "compare-toggle", "progress", "failed-tiles", "consistency-flags", "live-status",
    "reading-mode", "reading-mode-detail"]) $(id).hidden = true;
  $("viewer-section").dataset.view = "";
  markCurrentSlide();
}

/**
 * Open a slide in the viewer (and the report of its exam).
 * @param {object} exam exam object from /api/exams
 * @param {number} slideNumber
 * @param {{force?: boolean, keepBounds?: boolean}} [opts] force: open again even if it is open;
 *   keepBounds: keep the current view area
 */
async function openSlide(exam, slideNumber, { force = false, keepBounds = false } = {}) {
  const cur = state.slideInfo;
  if (!force && cur && cur.exam_id === exam.exam_id && cur.slide_number === slideNumber) return;
  const examChanged = !state.exam || state.exam.exam_id !== exam.exam_id;
  if (examChanged && report.dirty && state.exam &&
      !window.confirm(`The report of exam ${state.exam.exam_id} has unsaved changes. Open another exam anyway?`)) {
    return;
  }
  const bounds = keepBounds && state.view && state.view.opened ? state.view.main.viewport.getBounds() : null;
  const compare = state.compare;
  closeSlide();
  const seq = state.openSeq;
  state.exam = exam;
  state.opening = true;
  $("slide-title").textContent = `Exam ${exam.exam_id} · slide ${slideNumber} · patient ${exam.patient_id}`;
  $("viewer-empty").hidden = false;
  $("viewer-empty").textContent = "Opening slide…";
  if (examChanged) report.load(exam); // a forced re-open keeps the form (and unsaved text) as it is
  try {
    const info = await api.slide(exam.exam_id, slideNumber);
    if (seq !== state.openSeq) return;
    const dzi = parseDzi(await getText(info.dzi_url));
    if (seq !== state.openSeq) return;
    state.slideInfo = info;
    $("viewer-empty").hidden = true;
    const view = new SlideView({
      mainEl: $("osd-main"),
      lrEl: $("osd-lr"),
      info,
      dzi,
      onChange: () => view === state.view && renderViewState(),
      onError: (msg) => notify(msg, { key: `tiles:${info.exam_id}/${info.slide_number}` }),
      onFailed: (msg) => notify(msg, { kind: "warning", key: `failed:${info.exam_id}/${info.slide_number}` }),
    });
    state.view = view;
    view.onSettled(() => scheduleViewportReport(view, info, seq));
    if (bounds) view.main.addOnceHandler("open", () => view.main.viewport.fitBounds(bounds, true));
    setCompare(compare);
    connectEvents(info, seq);
    renderReadingMode(info, view);
    for (const id of ["mag-indicator", "mag-buttons", "compare-toggle"]) $(id).hidden = false;
    markCurrentSlide();
    renderViewState();
  } catch (err) {
    if (seq !== state.openSeq) return;
    $("viewer-empty").hidden = false;
    $("viewer-empty").textContent = "The slide could not be opened.";
    notify(`Could not open slide ${slideNumber} of exam ${exam.exam_id}: ${errorText(err)}`, { key: "open-slide" });
    throw err;
  } finally {
    if (seq === state.openSeq) state.opening = false;
  }
}

function connectEvents(info, seq) {
  if (!info.events_url) {
    notify("This slide has no live event stream: computed tiles will appear only when re-requested.", { kind: "warning" });
    return;
  }
  let wasOpen = false;
  state.stream = openEventStream(info.events_url, {
    getHeaders: () => session.authHeaders(),
    onEvent: (type, data) => {
      if (seq !== state.openSeq || !state.view) return;
      if (type === "tiles") state.view.tilesReady(data && data.tiles);
      else if (type === "failed") state.view.tilesFailed(data && data.reason, data && data.tiles);
    },
    onStatus: (status, detail) => {
      if (seq !== state.openSeq) return;
      state.events = status;
      const el = $("live-status");
      el.hidden = status === "closed";
      el.dataset.status = status;
      el.textContent = status === "open" ? "live" : status === "connecting" ? "connecting…" : "live updates lost, retrying…";
      el.title = detail ? `Live tile updates: ${detail}` : "Live tile updates from the server";
      if (status === "open") {
        dismiss("events");
        // Events sent while we were disconnected are lost: ask again for what still shows placeholders.
        if (wasOpen && state.view) state.view.recheckPlaceholders();
        wasOpen = true;
      } else if (status === "retrying") {
        notify(`Live tile updates interrupted (${detail || "connection lost"}); reconnecting.`, { kind: "warning", key: "events" });
      }
    },
    onUnauthorized: () => session.expire("Your session is no longer valid. Sign in again to continue."),
  });
}

// ---- viewport reports (prefetch of neighbouring tiles) --------------------------------------------

const viewportReports = { sent: 0, prefetching: 0, lastKey: "", timer: null, unsupported: false };
const VIEWPORT_REPORT_DELAY_MS = 300;

/** When the view comes to rest, say what it shows (POST …/viewport): the server prefetches the
 * ring around a super-resolution view and cancels tiles this view has left. */
function scheduleViewportReport(view, info, seq) {
  clearTimeout(viewportReports.timer);
  viewportReports.timer = setTimeout(async () => {
    if (seq !== state.openSeq || view !== state.view || viewportReports.unsupported || !session.signedIn) return;
    const region = view.visibleRegion();
    if (!region) return;
    const key = `${info.exam_id}/${info.slide_number}:${JSON.stringify(region)}`;
    if (key === viewportReports.lastKey) return;
    viewportReports.lastKey = key;
    try {
      const answer = await api.viewport(info.exam_id, info.slide_number, region);
      viewportReports.sent++;
      viewportReports.prefetching = answer && Number.isFinite(answer.prefetching) ? answer.prefetching : 0;
      dismiss("viewport");
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 405) && /not found|method not allowed/i.test(err.detail)) {
        viewportReports.unsupported = true; // a service without prefetch: nothing to tell
        console.info("slidestream: the viewer service does not take viewport reports; no prefetch");
        return;
      }
      if (err instanceof ApiError && err.status === 401) return; // the sign-in screen is showing
      viewportReports.lastKey = "";
      notify(`Prefetch of neighbouring tiles not requested: ${errorText(err)}`, { kind: "warning", key: "viewport" });
    }
  }, VIEWPORT_REPORT_DELAY_MS);
}

function renderReadingMode(info, view) {
  const lrMag = info.lr_magnification ? formatMag(info.lr_magnification) : `LR (1/${info.scale})`;
  const hrMag = view.hrMag ? formatMag(view.hrMag) : "full resolution";
  const label = $("reading-mode");
  delete label.dataset.mode;
  label.textContent = `Low-resolution mode: ${hrMag} computed on demand from the stored ${lrMag}`;
  label.title = info.reading_mode ? `Server: ${info.reading_mode}` : "";
  label.hidden = false;
  const detail = $("reading-mode-detail");
  delete detail.dataset.scanned;
  detail.textContent = `Why: this slide is stored at ${lrMag} only and there is no terminal-local cache in this session, ` +
    `so views above ${lrMag} are super-resolved (×${info.scale}) by the server when first viewed. ` +
    "Placeholders (the stored image upsampled) show until the computed tiles arrive.";
  detail.hidden = false;
  renderTerminalMode(info, hrMag, state.openSeq);
}

/** On a reading workstation the page comes from the terminal agent, which answers
 * /terminal/exams/{exam}; the viewer itself does not (404), and today's text stays. */
async function renderTerminalMode(info, hrMag, seq) {
  let local;
  try {
    local = await request("GET", `/terminal/exams/${encodeURIComponent(info.exam_id)}`);
  } catch {
    return; // not served through a terminal (or it cannot say): the server's mode applies
  }
  if (seq !== state.openSeq || !local) return;
  const slide = local.slides && local.slides[String(info.slide_number)];
  const complete = slide ? slide.complete : local.complete;
  const label = $("reading-mode");
  const detail = $("reading-mode-detail");
  label.dataset.mode = complete ? "high" : "low";
  if (complete) {
    label.textContent = `High-resolution mode: ${hrMag} from this workstation's local copy (${slide ? slide.source : local.source})`;
    detail.textContent = "Why: this exam was assigned to this reading workstation and downloaded ahead of reading, " +
      "so its high-magnification tiles are shown from the local copy without waiting for the server.";
  } else {
    label.textContent = `Low-resolution mode: ${local.reason}`;
  }
}

function setCompare(on) {
  state.compare = !!on;
  const btn = $("compare-toggle");
  btn.setAttribute("aria-pressed", String(state.compare));
  $("viewers").classList.toggle("comparing", state.compare);
  $("pane-lr").hidden = !state.compare;
  $("main-label").hidden = !state.compare;
  if (state.view) state.view.setCompare(state.compare);
}

function renderViewState() {
  const view = state.view;
  if (!view) return;
  const mag = view.magnification;
  $("mag-value").textContent = (view.magAssumed ? "≈" : "") + formatMag(mag);
  $("mag-value").title = view.magAssumed
    ? "Current magnification, assuming 5x storage (the slide's magnification is not recorded)"
    : "Current magnification";
  const kind = view.viewKind;
  const kindEl = $("view-kind");
  kindEl.dataset.kind = kind || "";
  const lrMag = state.slideInfo && state.slideInfo.lr_magnification ? formatMag(state.slideInfo.lr_magnification) : "LR";
  kindEl.textContent = kind === "computed" ? "COMPUTED · super-resolution"
    : kind === "scanned" ? "SCANNED · high-magnification scan"
    : kind === "lr" ? `SCANNED · stored ${lrMag}` : "";
  kindEl.title = kind === "computed"
    ? "This view is above the stored magnification: its pixels are computed by super-resolution, not scanned."
    : "This view shows scanned pixels.";
  $("viewer-section").dataset.view = kind || "";

  for (const b of document.querySelectorAll(".mag-btn")) {
    const m = Number(b.dataset.mag);
    b.disabled = view.hrMag != null && m > view.hrMag + 1e-6;
    b.setAttribute("aria-pressed", String(mag != null && Math.abs(mag - m) / m < 0.03));
  }

  const pending = view.pendingTiles.length;
  const progress = $("progress");
  if (pending > 0) {
    progress.textContent = `computing ${formatMag(view.pendingMagnification)}: ${pending} tile${pending === 1 ? "" : "s"} pending`;
    progress.hidden = false;
  } else {
    progress.hidden = true;
    progress.textContent = "";
  }
  const detail = $("reading-mode-detail");
  if (view.tilesBySource.scanned > 0 && !detail.dataset.scanned) {
    detail.dataset.scanned = "1";
    detail.textContent += " This slide also has a real high-magnification scan: where it exists, views show scanned pixels (marked SCANNED).";
  }
  const failed = view.failed.size;
  $("failed-tiles").hidden = failed === 0;
  $("failed-text").textContent = failed ? `${failed} tile${failed === 1 ? "" : "s"} failed` : "";
  const flagged = view.flagged.size;
  const flags = $("consistency-flags");
  flags.hidden = flagged === 0;
  flags.textContent = flagged ? `${flagged} tile${flagged === 1 ? "" : "s"} outlined: reconstruction disagrees with the stored LR` : "";
  flags.title = `Computed tiles that, scaled back down, differ from the stored low-resolution image (below ${view.consistencyThreshold} dB)`;
}

function jumpTo(mag) {
  const view = state.view;
  if (!view) return;
  if (view.hrMag != null && mag > view.hrMag + 1e-6) {
    notify(`${formatMag(mag)} is beyond this slide's full resolution (${formatMag(view.hrMag)}).`, { kind: "info", key: "mag" });
    return;
  }
  view.zoomToMagnification(mag);
}

// ---- keyboard -----------------------------------------------------------------------------------

function onKeyDown(e) {
  if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
  if (!$("login-screen").hidden) return;
  const t = e.target;
  if (t instanceof Element && t.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']")) return;
  const view = state.view;
  if (!view) return;
  switch (e.key) {
    case "+":
    case "=":
      view.zoomIn();
      break;
    case "-":
    case "_":
      view.zoomOut();
      break;
    case "ArrowLeft":
      view.pan(-1, 0);
      break;
    case "ArrowRight":
      view.pan(1, 0);
      break;
    case "ArrowUp":
      view.pan(0, -1);
      break;
    case "ArrowDown":
      view.pan(0, 1);
      break;
    case "1":
    case "2":
    case "3":
    case "4":
      jumpTo(JUMP_MAGS[Number(e.key) - 1]);
      break;
    case "c":
    case "C":
      setCompare(!state.compare);
      break;
    default:
      return;
  }
  e.preventDefault();
}

// ---- report -------------------------------------------------------------------------------------

const report = new ReportForm(
  {
    form: $("report-form"),
    title: $("report-title"),
    findings: $("report-findings"),
    diagnosis: $("report-diagnosis"),
    bodyPart: $("report-body-part"),
    status: $("report-status"),
    save: $("report-save"),
    meta: $("report-meta"),
    message: $("report-message"),
    conflict: $("report-conflict"),
    conflictText: $("report-conflict-text"),
    reload: $("report-reload"),
    yours: $("report-yours"),
    yoursText: $("report-yours-text"),
    empty: $("report-empty"),
  },
  {
    onSaved: (saved) => {
      // Keep the lists' report badges in step.
      for (const name of ["worklist", "search"]) {
        for (const exam of state.lists[name].exams) if (exam.exam_id === saved.exam_id) exam.report_status = saved.status;
      }
      for (const li of document.querySelectorAll(".exam")) {
        if (li.dataset.examId !== saved.exam_id) continue;
        const badge = li.querySelector(".report-badge");
        badge.dataset.status = saved.status;
        badge.textContent = saved.status;
      }
    },
  },
);

// ---- debug view ---------------------------------------------------------------------------------

function debugSnapshot() {
  const view = state.view;
  const v = view ? view.snapshot() : null;
  const info = state.slideInfo;
  return {
    signedIn: session.signedIn,
    user: session.user ? { ...session.user } : null,
    exam: state.exam ? state.exam.exam_id : null,
    slide: info ? { exam_id: info.exam_id, slide_number: info.slide_number } : null,
    ready: !!(view && view.opened),
    tilesBySource: v ? v.tilesBySource : { lr: 0, placeholder: 0, computed: 0, scanned: 0, other: 0 },
    pending: v ? v.pending : 0,
    pendingTiles: v ? v.pendingTiles : [],
    swapped: v ? v.swapped : 0,
    recentSwaps: v ? v.recentSwaps : [],
    failed: v ? v.failed : 0,
    flagged: v ? v.flagged : [],
    magnification: v ? v.magnification : null,
    settled: v ? v.settled : false,
    level: v ? v.level : null,
    lrLevel: view ? view.lrLevel : null,
    maxLevel: view ? view.maxLevel : null,
    fullMagnification: view ? view.hrMag : null,
    view: v ? v.view : null,
    mode: info ? "lr-on-demand" : null,
    compare: state.compare,
    lrTilesLoaded: v ? v.lrTilesLoaded : 0,
    events: state.events,
    viewportReports: viewportReports.sent,
    report: report.state,
    errors: [...notices.values()].filter((el) => el.classList.contains("notice-error"))
      .map((el) => el.querySelector(".notice-text").textContent),
  };
}

const debugView = {};
for (const key of Object.keys(debugSnapshot())) {
  Object.defineProperty(debugView, key, { enumerable: true, get: () => structuredClone(debugSnapshot()[key]) });
}
Object.defineProperty(debugView, "snapshot", { value: () => structuredClone(debugSnapshot()) });
Object.defineProperty(window, "slidestreamViewer", { value: Object.freeze(debugView), writable: false, configurable: false });

// ---- wiring -------------------------------------------------------------------------------------

function init() {
  $("login-form").addEventListener("submit", onLoginSubmit);
  $("sign-out").addEventListener("click", signOut);
  $("tab-worklist").addEventListener("click", () => selectTab("worklist"));
  $("tab-search").addEventListener("click", () => {
    selectTab("search");
    $("search-patient").focus();
  });
  $("worklist-refresh").addEventListener("click", () => loadList("worklist"));
  $("search-form").addEventListener("submit", onSearchSubmit);
  for (const name of ["worklist", "search"]) {
    $(`${name}-pager`).addEventListener("click", (e) => {
      const b = e.target instanceof Element ? e.target.closest("button[data-dir]") : null;
      if (b) page(name, Number(b.dataset.dir));
    });
  }
  for (const b of document.querySelectorAll(".mag-btn")) b.addEventListener("click", () => jumpTo(Number(b.dataset.mag)));
  $("compare-toggle").addEventListener("click", () => setCompare(!state.compare));
  $("failed-retry").addEventListener("click", () => state.view && state.view.retryFailed());
  document.addEventListener("keydown", onKeyDown);
  window.addEventListener("beforeunload", (e) => {
    if (report.dirty) e.preventDefault();
  });
  if (!window.OpenSeadragon) {
    notify("The image viewer (OpenSeadragon) did not load from /vendor/openseadragon/. Slides cannot be shown.");
  }
  showLogin(null);
}

init();
