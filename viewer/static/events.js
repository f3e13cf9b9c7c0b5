// Server-sent events over fetch(): EventSource cannot send the bearer header.
//
// openEventStream(url, {getHeaders, onEvent, onStatus}) reads `text/event-stream` with a
// ReadableStream, parses `event:`/`data:` fields (comment lines such as `: keepalive` are
// ignored), and reconnects with backoff when the stream ends or fails. It returns {close()}.

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

/**
 * @param {string} url
 * @param {{getHeaders: () => object, onEvent: (type: string, data: any) => void,
 *          onStatus?: (status: "connecting"|"open"|"retrying"|"closed", detail?: string) => void,
 *          onUnauthorized?: () => void}} handlers
 */
export function openEventStream(url, { getHeaders, onEvent, onStatus = () => {}, onUnauthorized = () => {} }) {
  let closed = false;
  let controller = null;
  let retryMs = RETRY_MIN_MS;
  let retryTimer = null;
  let everOpened = false;

  const dispatch = (type, dataLines) => {
    if (!dataLines.length) return;
    const raw = dataLines.join("\n");
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      data = raw;
    }
    try {
      onEvent(type || "message", data);
    } catch (err) {
      console.error("slidestream: event handler failed", err);
    }
  };

  async function connect() {
    if (closed) return;
    controller = new AbortController();
    onStatus(everOpened ? "retrying" : "connecting");
    let failure = "stream ended";
    try {
      const resp = await fetch(url, {
        headers: { Accept: "text/event-stream", ...getHeaders() },
        signal: controller.signal,
        cache: "no-store",
      });
      if (resp.status === 401) {
        onUnauthorized();
        failure = "not authorized";
      } else if (!resp.ok || !resp.body) {
        let detail = `HTTP ${resp.status}`;
        try {
          const body = await resp.json();
          if (body && body.detail) detail += `: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`;
        } catch {
          /* not JSON */
        }
        failure = detail;
      } else {
        everOpened = true;
        retryMs = RETRY_MIN_MS;
        onStatus("open");
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let type = "";
        let dataLines = [];
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let nl;
          while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
            const line = buffer.slice(0, nl);
            buffer = buffer.slice(nl + (buffer[nl] === "\r" && buffer[nl + 1] === "\n" ? 2 : 1));
            if (line === "") {
              dispatch(type, dataLines);
              type = "";
              dataLines = [];
            } else if (line.startsWith(":")) {
              // comment (keepalive)
            } else {
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              let val = colon < 0 ? "" : line.slice(colon + 1);
              if (val.startsWith(" ")) val = val.slice(1);
              if (field === "event") type = val;
              else if (field === "data") dataLines.push(val);
              else if (field === "retry" && /^\d+$/.test(val)) retryMs = Math.max(RETRY_MIN_MS, Number(val));
            }
          }
        }
      }
    } catch (err) {
      if (closed || (err && err.name === "AbortError")) return;
      failure = err && err.message ? err.message : String(err);
    }
    if (closed) return;
    onStatus("retrying", failure);
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(retryTimer);
      if (controller) controller.abort();
      onStatus("closed");
    },
    /** Reconnect now (e.g. after a token refresh following a 401). */
    reconnect() {
      if (closed) return;
      clearTimeout(retryTimer);
      if (controller) controller.abort();
      retryMs = RETRY_MIN_MS;
      connect();
    },
  };
}
