// One open slide in OpenSeadragon (6.x, loaded as the global `OpenSeadragon` from /vendor/).
//
// Tiles need the bearer header, so they load with AJAX (`loadTilesWithAjax`, `ajaxHeaders`).
// Each tile answer says where it came from (`X-Tile-Source`: lr | computed | scanned |
// placeholder). A placeholder is the stored LR region upsampled while the server computes the
// super-resolved tile; when the event stream announces the tile, we swap it:
//
//   * getTileUrl returns a *getter* (OpenSeadragon evaluates it when the request starts) that
//     appends `?v=<version>` once a tile has been reloaded, so a reload never reuses a cached
//     answer anywhere on the way;
//   * getTileHashKey is stable per tile and ignores the headers (the default key contains the
//     ajax headers, so every token refresh would otherwise drop and refetch all tiles);
//   * to swap, the loaded Tile is unloaded with its cache erased (`tile.unload(true)`) and the
//     tiled image is told to update; its next update requests that one tile again (new version)
//     while OpenSeadragon draws the lower level over the hole, so only that tile changes.
//
// "Pending" tiles are the placeholders OpenSeadragon holds now (minus those the server reported
// as failed): a placeholder leaves the count when its real tile replaces it ("swapped") or when
// OpenSeadragon drops it. With no news of a placeholder for a while (a lost event), it is asked
// for again, backing off. The counters describe the main ("computed") viewer only; the
// comparison viewer always shows the LR upsampled view (`?view=lr`).
//
// Consistency: a computed tile answers `X-Tile-Consistency-dB` (and `event: tiles` carries
// `consistency_db`): the tile box-downsampled to the stored magnification against the stored LR.
// Tiles below the slide's `consistency_threshold_db` get an outline overlay: there the
// reconstruction disagrees with what was measured.

import { session } from "./api.js";

const OSD = window.OpenSeadragon;

const RELOAD_READY_DELAY_MS = [300, 1000, 2500, 5000, 10000];
const READY_NEWS_MAX_AGE_MS = 60_000;
const STALE_PLACEHOLDER_MS = 20_000; // re-request a placeholder when no event came for it in this long,
const STALE_PLACEHOLDER_MAX_MS = 300_000; // doubling each time up to this
const STALE_CHECK_MS = 5_000;
const ZOOM_STEP = 1.5;
const PAN_FRACTION = 0.15;

export const tileKey = (level, col, row) => `${level}/${col}/${row}`;

/** Parse a DZI descriptor (XML). */
export function parseDzi(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  const image = doc.getElementsByTagNameNS("*", "Image")[0];
  const size = doc.getElementsByTagNameNS("*", "Size")[0];
  if (!image || !size || doc.getElementsByTagName("parsererror").length) {
    throw new Error("The slide descriptor (DZI) could not be read");
  }
  const num = (el, name) => {
    const v = Number(el.getAttribute(name));
    if (!Number.isFinite(v)) throw new Error(`The slide descriptor (DZI) has no valid ${name}`);
    return v;
  };
  return {
    width: num(size, "Width"),
    height: num(size, "Height"),
    tileSize: num(image, "TileSize"),
    overlap: num(image, "Overlap"),
    format: image.getAttribute("Format") || "jpeg",
  };
}

/** "40x", "12.5x", "2.5x" */
export function formatMag(mag) {
  if (mag == null || !Number.isFinite(mag)) return "–";
  const rounded = mag >= 10 ? Math.round(mag) : Math.round(mag * 10) / 10;
  return `${rounded}x`;
}

export class SlideView {
  /**
   * @param {{mainEl: HTMLElement, lrEl: HTMLElement, info: object, dzi: object,
   *          onChange: () => void, onError: (msg: string) => void, onFailed: (msg: string) => void}} opts
   */
  constructor({ mainEl, lrEl, info, dzi, onChange, onError, onFailed }) {
    if (!OSD) throw new Error("OpenSeadragon did not load (/vendor/openseadragon/openseadragon.min.js)");
    this.info = info;
    this.dzi = dzi;
    this.mainEl = mainEl;
    this.lrEl = lrEl;
    this.onChange = onChange;
    this.onError = onError;
    this.onFailed = onFailed;
    this.tilesUrl = info.dzi_url.replace(/\.dzi(\?.*)?$/, "_files/");
    this.maxLevel = Number.isInteger(info.max_level) ? info.max_level : Math.ceil(Math.log2(Math.max(dzi.width, dzi.height)));
    this.lrLevel = Number.isInteger(info.lr_level) ? info.lr_level : this.maxLevel - Math.round(Math.log2(info.scale || 1));
    this.levels = new Map((info.levels || []).map((l) => [l.level, l]));
    this.hrMag = this._hrMagnification();

    // Tile state of the main viewer.
    this.versions = new Map(); // key -> version appended to the tile URL
    this.tilesBySource = { lr: 0, placeholder: 0, computed: 0, scanned: 0, other: 0 };
    this.sourceByKey = new Map(); // loaded tiles: key -> source
    this.placeholderShown = new Map(); // loaded placeholder tiles: key -> {level, col, row, since}
    this.awaitingSwap = new Set(); // keys answered as placeholder, real tile not loaded since
    this.serverReady = new Map(); // key -> {attempts, at}: the event said ready, a placeholder may still land
    this.staleAfter = new Map(); // key -> ms without news before a placeholder is asked for again
    this.failed = new Map(); // key -> reason
    this.swapped = 0;
    this.recentSwaps = [];
    this.tileErrors = 0;
    this.lastTileError = null;
    this.lrTilesLoaded = 0;
    this.consistency = new Map(); // key -> dB of computed tiles seen (header or event)
    this.consistencyThreshold = Number.isFinite(info.consistency_threshold_db) ? info.consistency_threshold_db : null;
    this.flagged = new Map(); // key -> outline overlay element of a tile below the threshold

    this.compare = false;
    this.lrViewer = null;
    this._leader = null;
    this._syncing = false;
    this._changeQueued = false;
    this._destroyed = false;

    this.main = this._createViewer(mainEl, "main");
    this._leader = this.main; // the viewer the user moves last drives the other one in comparison
    this._staleTimer = setInterval(() => this._reloadStalePlaceholders(), STALE_CHECK_MS);
  }

  // ---- public state -------------------------------------------------------------------------

  get opened() {
    return !!(this.main && this.main.world.getItemCount() > 0);
  }

  /** Magnification of the current view: (full-resolution magnification) x (image zoom). */
  get magnification() {
    const z = this.imageZoom();
    if (z == null || this.hrMag == null) return null;
    return this.hrMag * z;
  }

  /** True once the zoom animation has reached its target (OpenSeadragon springs towards it). */
  get settled() {
    if (!this.opened) return false;
    const vp = this.main.viewport;
    return Math.abs(vp.getZoom(true) - vp.getZoom(false)) <= 1e-9 * vp.getZoom(false);
  }

  /** Screen pixels per full-resolution pixel (CSS pixels). */
  imageZoom() {
    const item = this.opened ? this.main.world.getItemAt(0) : null;
    if (!item) return null;
    return item.viewportToImageZoom(this.main.viewport.getZoom(true));
  }

  /**
   * The deepest pyramid level the current view draws. OpenSeadragon takes the deepest level whose
   * pixels are at least `minPixelRatio` (1 here) screen pixels wide, i.e. never more detail than
   * the screen shows, so super-resolution is only asked for when the view really needs it.
   */
  get drawLevel() {
    const z = this.imageZoom();
    if (z == null) return null;
    const level = Math.floor(this.maxLevel + Math.log2(z) + 1e-6);
    return Math.max(0, Math.min(this.maxLevel, level));
  }

  /** "computed" (super-resolution level), "scanned" (real high-magnification scan) or "lr" (stored LR). */
  get viewKind() {
    const level = this.drawLevel;
    if (level == null) return null;
    const kind = this.levels.get(level)?.kind ?? (level > this.lrLevel ? "sr" : "lr");
    if (kind !== "sr") return "lr";
    let scanned = 0;
    let other = 0;
    for (const [key, src] of this.sourceByKey) {
      if (!key.startsWith(`${level}/`)) continue;
      if (src === "scanned") scanned++;
      else other++;
    }
    return scanned > 0 && other === 0 ? "scanned" : "computed";
  }

  /**
   * What the main viewer shows, in pixels of the level it draws: {level, x, y, width, height}
   * (null before the slide is open). Reported at LR levels too: the server then cancels the
   * super-resolution tiles this view no longer needs.
   */
  visibleRegion() {
    const item = this.opened ? this.main.world.getItemAt(0) : null;
    const level = this.drawLevel;
    if (!item || level == null) return null;
    const rect = item.viewportToImageRectangle(this.main.viewport.getBounds(true));
    const f = 2 ** (level - this.maxLevel);
    const x = Math.floor(rect.x * f);
    const y = Math.floor(rect.y * f);
    const width = Math.max(1, Math.ceil((rect.x + rect.width) * f) - x);
    const height = Math.max(1, Math.ceil((rect.y + rect.height) * f) - y);
    return { level, x, y, width, height };
  }

  /** fn() when the main viewer's pan/zoom animation has come to rest. */
  onSettled(fn) {
    this.main.addHandler("animation-finish", fn);
    this.main.addHandler("open", fn);
  }

  levelMagnification(level) {
    const m = this.levels.get(level)?.magnification;
    if (m != null) return m;
    return this.hrMag == null ? null : this.hrMag / 2 ** (this.maxLevel - level);
  }

  /** Magnifications the jump buttons may go to (those the pyramid reaches). */
  get maxMagnification() {
    return this.hrMag;
  }

  /** Placeholders on hand whose real tile is still being computed. */
  get pendingTiles() {
    const out = [];
    for (const [key, p] of this.placeholderShown) if (!this.failed.has(key)) out.push(p);
    return out;
  }

  /** Magnification of the deepest level that has pending tiles. */
  get pendingMagnification() {
    let level = -1;
    for (const p of this.pendingTiles) level = Math.max(level, p.level);
    return level < 0 ? null : this.levelMagnification(level);
  }

  /** Tiles seen whose reconstruction disagrees with the stored LR (below the threshold). */
  get flaggedTiles() {
    return [...this.flagged.keys()].map((key) => ({ key, db: this.consistency.get(key) }));
  }

  snapshot() {
    return {
      flagged: this.flaggedTiles,
      tilesBySource: { ...this.tilesBySource },
      pending: this.pendingTiles.length,
      pendingTiles: this.pendingTiles.slice(0, 50)
        .map((p) => ({ level: p.level, col: p.col, row: p.row, ageMs: Date.now() - p.since })),
      swapped: this.swapped,
      failed: this.failed.size,
      placeholdersShown: this.placeholderShown.size,
      recentSwaps: this.recentSwaps.slice(-20),
      tileErrors: this.tileErrors,
      magnification: this.magnification,
      settled: this.settled,
      level: this.drawLevel,
      view: this.viewKind,
      compare: this.compare,
      lrTilesLoaded: this.lrTilesLoaded,
    };
  }

  // ---- navigation ---------------------------------------------------------------------------

  zoomToMagnification(mag) {
    const item = this.opened ? this.main.world.getItemAt(0) : null;
    if (!item || this.hrMag == null) return;
    this._leader = this.main;
    this.main.viewport.zoomTo(item.imageToViewportZoom(mag / this.hrMag));
    this.main.viewport.applyConstraints();
  }

  zoomBy(factor) {
    if (!this.opened) return;
    this._leader = this.main;
    this.main.viewport.zoomBy(factor);
    this.main.viewport.applyConstraints();
  }

  zoomIn() {
    this.zoomBy(ZOOM_STEP);
  }

  zoomOut() {
    this.zoomBy(1 / ZOOM_STEP);
  }

  /** Pan by a fraction of the visible area; dx, dy in {-1, 0, 1}. */
  pan(dx, dy) {
    if (!this.opened) return;
    this._leader = this.main;
    const b = this.main.viewport.getBounds();
    this.main.viewport.panBy(new OSD.Point(dx * b.width * PAN_FRACTION, dy * b.height * PAN_FRACTION));
    this.main.viewport.applyConstraints();
  }

  // ---- comparison ---------------------------------------------------------------------------

  setCompare(on) {
    on = !!on;
    if (on === this.compare) return;
    this.compare = on;
    if (on) {
      this.lrViewer = this._createViewer(this.lrEl, "lr");
      this.lrViewer.addHandler("open", () => this._syncFrom(this.main, this.lrViewer));
    } else if (this.lrViewer) {
      this.lrViewer.destroy();
      this.lrViewer = null;
      this.lrTilesLoaded = 0;
    }
    this._changed();
  }

  _syncFrom(src, dst) {
    if (!src || !dst || this._syncing || !dst.world.getItemCount()) return;
    this._syncing = true;
    try {
      dst.viewport.zoomTo(src.viewport.getZoom(true), null, true);
      dst.viewport.panTo(src.viewport.getCenter(true), true);
    } finally {
      this._syncing = false;
    }
  }

  // ---- tokens, live events --------------------------------------------------------------------

  setAuthHeaders(headers) {
    for (const v of [this.main, this.lrViewer]) if (v) v.setAjaxHeaders({ ...headers }, true);
  }

  /** `event: tiles` from the slide's event stream. */
  tilesReady(tiles) {
    const reload = [];
    for (const t of tiles || []) {
      if (!t || !Number.isInteger(t.level)) continue;
      const key = tileKey(t.level, t.col, t.row);
      if (Number.isFinite(t.consistency_db)) this._noteConsistency(t.level, t.col, t.row, t.consistency_db);
      this.failed.delete(key);
      // A placeholder answer still in flight is reloaded when it lands (serverReady).
      this.serverReady.set(key, { attempts: 0, at: Date.now() });
      if (this.placeholderShown.has(key)) reload.push(key);
    }
    if (reload.length) this.reloadTiles(reload);
    this._changed();
  }

  /** `event: failed`: the server gave up computing these tiles; they keep the LR placeholder. */
  tilesFailed(reason, tiles) {
    let n = 0;
    for (const t of tiles || []) {
      if (!t || !Number.isInteger(t.level)) continue;
      const key = tileKey(t.level, t.col, t.row);
      this.failed.set(key, reason || "unknown reason");
      this.serverReady.delete(key);
      n++;
    }
    const total = this.failed.size;
    if (n) this.onFailed(`Super-resolution failed for ${total} tile${total === 1 ? "" : "s"} ` +
      `(latest: ${reason || "no reason given"}). Those areas show the stored low-resolution image upsampled.`);
    this._changed();
  }

  /** Ask again for the failed tiles (the server queues them again). */
  retryFailed() {
    const keys = [...this.failed.keys()];
    this.failed.clear();
    this.reloadTiles(keys);
    this._changed();
  }

  /** After the event stream reconnects, events may have been missed: re-request all placeholders. */
  recheckPlaceholders() {
    this.reloadTiles(this.pendingTiles.map((p) => tileKey(p.level, p.col, p.row)));
  }

  /** Drop the given loaded tiles of the main viewer and request them again (new URL version). */
  reloadTiles(keys) {
    const item = this.opened ? this.main.world.getItemAt(0) : null;
    if (!item || !keys.length) return 0;
    const wanted = new Set(keys);
    let n = 0;
    for (const tile of this.main.tileCache.getLoadedTilesFor(item)) {
      const key = tileKey(tile.level, tile.x, tile.y);
      if (!wanted.has(key)) continue;
      this.versions.set(key, (this.versions.get(key) || 0) + 1);
      tile.unload(true); // erase its cached data: the next update requests it again (if still needed)
      n++;
    }
    if (n) {
      // Public way to make the tiled image re-run its tile selection on the next frame
      // (setClip flags the item for update) even when the viewport does not move.
      item.setClip(item.getClip());
      this.main.forceRedraw();
    }
    return n;
  }

  destroy() {
    this._destroyed = true;
    clearInterval(this._staleTimer);
    if (this.lrViewer) this.lrViewer.destroy();
    if (this.main) this.main.destroy();
    this.lrViewer = null;
    this.main = null;
  }

  // ---- internals ----------------------------------------------------------------------------

  _hrMagnification() {
    const info = this.info;
    this.magAssumed = false;
    if (info.lr_magnification && info.scale) return info.lr_magnification * info.scale;
    const top = (info.levels || []).find((l) => l.level === info.max_level);
    if (top && top.magnification) return top.magnification;
    // Magnification not recorded: slides are stored at 5x unless said otherwise (the server
    // picks the x8 scale then), so the full resolution is taken as 5x * scale, marked assumed.
    this.magAssumed = true;
    return 5 * (info.scale || 8);
  }

  _tileSource(view) {
    const { width, height, tileSize, overlap, format } = this.dzi;
    const source = new OSD.DziTileSource({ width, height, tileSize, tileOverlap: overlap, tilesUrl: this.tilesUrl, fileFormat: format });
    const slideId = `${this.info.exam_id}/${this.info.slide_number}`;
    const tilesUrl = this.tilesUrl;
    const versions = this.versions;
    source.getTileUrl = (level, x, y) => {
      const base = `${tilesUrl}${level}/${x}_${y}.${format}`;
      if (view === "lr") return `${base}?view=lr`;
      const key = tileKey(level, x, y);
      return () => {
        const v = versions.get(key);
        return v ? `${base}?v=${v}` : base;
      };
    };
    source.getTileHashKey = (level, x, y) => `${view}:${slideId}:${level}/${x}_${y}`;
    return source;
  }

  _createViewer(element, view) {
    const viewer = OSD({
      element,
      prefixUrl: "/vendor/openseadragon/images/",
      drawer: "canvas",
      loadTilesWithAjax: true,
      ajaxHeaders: session.authHeaders(),
      crossOriginPolicy: false,
      minPixelRatio: 1,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      minZoomImageRatio: 0.25, // let 5x be reached on small slides too
      preserveImageSizeOnResize: true,
      keyboardNavEnabled: false, // the page handles keys (see app.js), also when the viewer has focus
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
      showNavigator: view === "main",
      navigatorPosition: "BOTTOM_RIGHT",
      showRotationControl: false,
      showFullPageControl: false,
      tileRetryMax: 2,
      tileRetryDelay: 1500,
      timeout: 60_000,
      animationTime: 0.5,
    });
    const lead = () => (this._leader = viewer);
    element.addEventListener("pointerdown", lead, { capture: true });
    element.addEventListener("wheel", lead, { capture: true, passive: true });

    viewer.addHandler("open-failed", (e) => this.onError(`The slide could not be opened: ${e.message || "unknown error"}`));
    viewer.addHandler("tile-load-failed", (e) => this._tileFailed(e));
    viewer.addHandler("viewport-change", () => {
      const other = viewer === this.main ? this.lrViewer : this.main;
      if (other && this._leader === viewer) this._syncFrom(viewer, other);
      if (viewer === this.main) this._changed();
    });
    if (view === "main") {
      viewer.addHandler("tile-loaded", (e) => this._tileLoaded(e));
      viewer.addHandler("tile-unloaded", (e) => this._tileUnloaded(e));
      viewer.addHandler("open", () => this._changed());
    } else {
      viewer.addHandler("tile-loaded", (e) => {
        if (e.tileRequest) this.lrTilesLoaded++;
      });
    }
    viewer.open(this._tileSource(view));
    return viewer;
  }

  _tileLoaded(e) {
    const tile = e.tile;
    const req = e.tileRequest;
    if (!tile || !req) return; // re-used cached data, nothing new
    const raw = (req.getResponseHeader("X-Tile-Source") || "").trim().toLowerCase();
    const source = ["lr", "placeholder", "computed", "scanned"].includes(raw) ? raw : "other";
    this.tilesBySource[source]++;
    const key = tileKey(tile.level, tile.x, tile.y);
    this.sourceByKey.set(key, source);
    const db = parseFloat(req.getResponseHeader("X-Tile-Consistency-dB") || "");
    if (source === "computed" && Number.isFinite(db)) this._noteConsistency(tile.level, tile.x, tile.y, db);
    const now = Date.now();
    if (source === "placeholder") {
      this.placeholderShown.set(key, { level: tile.level, col: tile.x, row: tile.y, since: now });
      this.awaitingSwap.add(key);
      const ready = this.serverReady.get(key);
      if (ready && now - ready.at < READY_NEWS_MAX_AGE_MS && ready.attempts < RELOAD_READY_DELAY_MS.length) {
        // The event said ready before this (older) request was answered: ask again, backing off.
        setTimeout(() => !this._destroyed && this.reloadTiles([key]), RELOAD_READY_DELAY_MS[ready.attempts]);
        ready.attempts++;
      } else if (ready) {
        this.serverReady.delete(key); // old news, or tried enough: the stale-placeholder check takes over
      }
    } else {
      this.placeholderShown.delete(key);
      this.serverReady.delete(key);
      this.staleAfter.delete(key);
      if (this.awaitingSwap.delete(key)) {
        this.swapped++;
        this.recentSwaps.push({ level: tile.level, col: tile.x, row: tile.y, source, at: now });
        if (this.recentSwaps.length > 100) this.recentSwaps.splice(0, this.recentSwaps.length - 100);
      }
    }
    this._changed();
  }

  _tileUnloaded(e) {
    const tile = e.tile;
    if (!tile) return;
    const key = tileKey(tile.level, tile.x, tile.y);
    this.sourceByKey.delete(key);
    this.placeholderShown.delete(key);
    this._changed();
  }

  _tileFailed(e) {
    const req = e.tileRequest;
    if (req && req.status === 401) {
      session.expire("Your session is no longer valid (a tile request was refused). Sign in again to continue.");
      return;
    }
    if (e.maxReached === false) return; // OpenSeadragon retries it
    this.tileErrors++;
    let detail = e.message || "tile failed to load";
    if (req && req.status) {
      detail = `HTTP ${req.status}`;
      try {
        const text = new TextDecoder().decode(req.response);
        const body = JSON.parse(text);
        if (body && body.detail) detail += `: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`;
      } catch {
        /* not JSON */
      }
    }
    this.lastTileError = detail;
    const t = e.tile;
    this.onError(`${this.tileErrors} tile${this.tileErrors === 1 ? "" : "s"} could not be loaded` +
      (t ? ` (last: level ${t.level}, ${t.x},${t.y}: ${detail})` : `: ${detail}`));
    this._changed();
  }

  _noteConsistency(level, col, row, db) {
    const key = tileKey(level, col, row);
    this.consistency.set(key, db);
    const item = this.opened ? this.main.world.getItemAt(0) : null;
    if (!item || this.consistencyThreshold == null || db >= this.consistencyThreshold || this.flagged.has(key)) return;
    // The tile's rectangle in full-resolution pixels (edge tiles are smaller).
    const f = 2 ** (this.maxLevel - level);
    const size = this.dzi.tileSize;
    const x = col * size * f;
    const y = row * size * f;
    const rect = item.imageToViewportRectangle(x, y, Math.min(size * f, this.dzi.width - x), Math.min(size * f, this.dzi.height - y));
    const el = document.createElement("div");
    el.className = "consistency-flag"; // outline only (pointer-events: none): panning goes through
    el.dataset.db = db.toFixed(1);
    this.main.addOverlay({ element: el, location: rect });
    this.flagged.set(key, el);
    this._changed();
  }

  _reloadStalePlaceholders() {
    if (!this.opened) return;
    const now = Date.now();
    const stale = [];
    for (const [key, p] of this.placeholderShown) {
      const after = this.staleAfter.get(key) || STALE_PLACEHOLDER_MS;
      if (this.failed.has(key) || now - p.since < after) continue;
      this.staleAfter.set(key, Math.min(STALE_PLACEHOLDER_MAX_MS, after * 2));
      stale.push(key);
    }
    if (stale.length) this.reloadTiles(stale);
  }

  _changed() {
    if (this._changeQueued || this._destroyed) return;
    this._changeQueued = true;
    requestAnimationFrame(() => {
      this._changeQueued = false;
      if (!this._destroyed) this.onChange();
    });
  }
}
