// API client of the slidestream viewer: bearer session, JSON requests, error mapping, token refresh.
//
// Every /api route except login needs `Authorization: Bearer <token>`. Tokens are short-lived; the
// session refreshes its token a minute before expiry while the page is in use (user input since
// the token was issued). An idle page lets the token run out and the sign-in screen comes back.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: the request did not reach the service)
   * @param {string} detail human-readable message (the API's `detail`, flattened)
   * @param {Headers|null} headers response headers, when there was a response
   */
  constructor(status, detail, headers = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.headers = headers;
  }
}

/** FastAPI sends `detail` as a string, or as a list of validation errors (422). */
export function formatDetail(detail) {
  if (detail == null) return null;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        if (d && typeof d === "object") {
          const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body" && p !== "query").join(".") : "";
          return loc ? `${loc}: ${d.msg ?? JSON.stringify(d)}` : d.msg ?? JSON.stringify(d);
        }
        return String(d);
      })
      .join("; ");
  }
  return JSON.stringify(detail);
}

const REFRESH_BEFORE_MS = 60_000;
const REFRESH_RETRY_MS = 15_000;

class Session {
  constructor() {
    this.token = null;
    this.user = null;
    this.expiresAt = 0; // local clock, ms
    this.issuedAt = 0; // local clock, ms
    this.lastActivity = 0;
    this._timer = null;
    this._expiryTimer = null;
    this._tokenListeners = new Set();
    this._expiredListeners = new Set();
    for (const type of ["keydown", "pointerdown", "wheel"]) {
      window.addEventListener(type, () => (this.lastActivity = Date.now()), { capture: true, passive: true });
    }
  }

  get signedIn() {
    return this.token !== null;
  }

  authHeaders() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /** fn(token) after sign-in and every refresh (update tile/stream headers there). */
  onToken(fn) {
    this._tokenListeners.add(fn);
    return () => this._tokenListeners.delete(fn);
  }

  /** fn(reason) when the session ended without sign-out (expired, refused). */
  onExpired(fn) {
    this._expiredListeners.add(fn);
    return () => this._expiredListeners.delete(fn);
  }

  async login(username, password) {
    const body = await request("POST", "/api/auth/login", { body: { username, password }, auth: false, raw: true });
    this._accept(body.data, body.headers);
    return this.user;
  }

  async refresh() {
    const body = await request("POST", "/api/auth/refresh", { raw: true });
    this._accept(body.data, body.headers);
  }

  signOut() {
    this._clear();
  }

  /** The token was refused (401) or ran out: drop it and tell the page. */
  expire(reason) {
    if (!this.token) return;
    this._clear();
    for (const fn of this._expiredListeners) fn(reason);
  }

  _accept(data, headers) {
    if (!data || typeof data.token !== "string" || !data.user) {
      throw new ApiError(0, "Unexpected answer from the sign-in service (no token)");
    }
    const now = Date.now();
    // Token lifetime from the server's own clock (Date header) when it sends one, so that a
    // skewed local clock does not make us refresh too late.
    let lifetime = Date.parse(data.expires_at) - now;
    const serverNow = headers ? Date.parse(headers.get("Date") || "") : NaN;
    if (!Number.isNaN(serverNow) && !Number.isNaN(Date.parse(data.expires_at))) {
      lifetime = Date.parse(data.expires_at) - serverNow;
    }
    if (!Number.isFinite(lifetime) || lifetime <= 0) lifetime = 15 * 60_000;
    this.token = data.token;
    this.user = data.user;
    this.issuedAt = now;
    this.expiresAt = now + lifetime;
    this._schedule();
    for (const fn of this._tokenListeners) fn(this.token);
  }

  _schedule() {
    clearTimeout(this._timer);
    clearTimeout(this._expiryTimer);
    const inMs = Math.max(5_000, this.expiresAt - Date.now() - REFRESH_BEFORE_MS);
    this._timer = setTimeout(() => this._maybeRefresh(), inMs);
    this._expiryTimer = setTimeout(
      () => this.expire("Your session expired (no activity). Sign in again to continue."),
      Math.max(0, this.expiresAt - Date.now()),
    );
  }

  async _maybeRefresh() {
    if (!this.token) return;
    if (this.lastActivity < this.issuedAt) {
      // Not in use since the token was issued: let it run out (the expiry timer signs out).
      this._timer = setTimeout(() => this._maybeRefresh(), 5_000);
      return;
    }
    try {
      await this.refresh();
    } catch (err) {
      if (err instanceof ApiError && err.status === 0 && Date.now() + REFRESH_RETRY_MS < this.expiresAt) {
        this._timer = setTimeout(() => this._maybeRefresh(), REFRESH_RETRY_MS);
        return;
      }
      if (!(err instanceof ApiError && err.status === 401)) {
        this.expire(`Could not renew the session: ${err.message}`);
      }
    }
  }

  _clear() {
    clearTimeout(this._timer);
    clearTimeout(this._expiryTimer);
    this.token = null;
    this.user = null;
    this.expiresAt = 0;
  }
}

export const session = new Session();

/**
 * JSON request to the viewer API.
 * @param {string} method
 * @param {string} path absolute path (the API is on the page's origin)
 * @param {{query?: object, body?: any, auth?: boolean, signal?: AbortSignal, raw?: boolean}} [opts]
 *   raw: resolve to {data, headers} instead of data
 * @returns {Promise<any>} the parsed JSON (null for an empty body)
 * @throws {ApiError} for a non-2xx answer or a network failure
 */
export async function request(method, path, { query, body, auth = true, signal, raw = false } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) {
    if (!session.token) throw new ApiError(401, "Not signed in");
    Object.assign(headers, session.authHeaders());
  }
  let resp;
  try {
    resp = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, `Cannot reach the viewer service (${err && err.message ? err.message : err})`);
  }
  const text = await resp.text();
  let data = null;
  let parsed = true;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      parsed = false;
    }
  }
  if (!resp.ok) {
    let detail = parsed && data && typeof data === "object" ? formatDetail(data.detail) : null;
    if (!detail) detail = `HTTP ${resp.status} ${resp.statusText || ""}`.trim();
    const err = new ApiError(resp.status, detail, resp.headers);
    if (resp.status === 401 && auth && session.token) {
      session.expire(`Your session is no longer valid (${detail}). Sign in again to continue.`);
    }
    throw err;
  }
  if (!parsed) throw new ApiError(resp.status, `Unexpected answer from ${method} ${path} (not JSON)`, resp.headers);
  return raw ? { data, headers: resp.headers } : data;
}

export const api = {
  me: () => request("GET", "/api/me"),
  exams: (query) => request("GET", "/api/exams", { query }),
  slide: (examId, slideNumber) =>
    request("GET", `/api/slides/${encodeURIComponent(examId)}/${encodeURIComponent(slideNumber)}`),
  report: async (examId) => {
    try {
      return await request("GET", `/api/exams/${encodeURIComponent(examId)}/report`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  },
  /** Tell the server what the viewer shows so it prefetches the neighbouring SR tiles. */
  viewport: (examId, slideNumber, region) =>
    request("POST", `/api/slides/${encodeURIComponent(examId)}/${encodeURIComponent(slideNumber)}/viewport`,
      { body: region }),
  saveReport: (examId, report) => request("PUT", `/api/exams/${encodeURIComponent(examId)}/report`, { body: report }),
};

/** GET a text resource with the bearer header (the DZI descriptor). */
export async function getText(url) {
  let resp;
  try {
    resp = await fetch(url, { headers: session.authHeaders() });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the viewer service (${err && err.message ? err.message : err})`);
  }
  const text = await resp.text();
  if (!resp.ok) {
    let detail = null;
    try {
      detail = formatDetail(JSON.parse(text).detail);
    } catch {
      /* not JSON */
    }
    const err = new ApiError(resp.status, detail || `HTTP ${resp.status} for ${url}`, resp.headers);
    if (resp.status === 401 && session.token) session.expire(`Your session is no longer valid (${err.detail}).`);
    throw err;
  }
  return text;
}
