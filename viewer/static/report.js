// Report form of the open exam: load on exam open, save with optimistic concurrency.
//
// PUT /api/exams/{exam}/report carries `expected_revision` (null when creating). A 409 means
// someone saved first: the message is shown with a "Reload report" action; the text typed here
// is kept aside so that it can be copied into the reloaded report.

import { api, ApiError } from "./api.js";

export class ReportForm {
  /**
   * @param {{form: HTMLFormElement, title: HTMLElement, findings: HTMLTextAreaElement,
   *   diagnosis: HTMLTextAreaElement, bodyPart: HTMLInputElement, status: HTMLSelectElement,
   *   save: HTMLButtonElement, meta: HTMLElement, message: HTMLElement, conflict: HTMLElement,
   *   conflictText: HTMLElement, reload: HTMLButtonElement, yours: HTMLElement, yoursText: HTMLTextAreaElement,
   *   empty: HTMLElement}} els
   * @param {{onSaved?: (report: object) => void}} hooks
   */
  constructor(els, { onSaved = () => {} } = {}) {
    this.els = els;
    this.onSaved = onSaved;
    this.examId = null;
    this.revision = null;
    this.report = null;
    this.dirty = false;
    this.busy = false;
    this.lastMessage = null;
    this.conflict = null;
    this._loadSeq = 0;

    els.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    els.form.addEventListener("input", () => {
      this.dirty = true;
      if (this.lastMessage && this.lastMessage.kind === "ok") this._message("Unsaved changes", "info");
    });
    els.form.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") {
        e.preventDefault();
        this.save();
      }
    });
    els.reload.addEventListener("click", () => this.reload());
    this._setEnabled(false);
  }

  get state() {
    return {
      exam: this.examId,
      revision: this.revision,
      status: this.report ? this.report.status : null,
      dirty: this.dirty,
      message: this.lastMessage ? this.lastMessage.text : null,
      conflict: this.conflict,
    };
  }

  clear() {
    this._loadSeq++;
    this.examId = null;
    this.revision = null;
    this.report = null;
    this.dirty = false;
    this._fill(null, null);
    this._message(null);
    this._hideConflict();
    this.els.title.textContent = "Report";
    this.els.empty.textContent = "Open a slide to see the report of its exam.";
    this.els.empty.hidden = false;
    this.els.form.hidden = true;
  }

  /** Load the report of an exam (null body part default from the exam). */
  async load(exam) {
    const seq = ++this._loadSeq;
    this.examId = exam.exam_id;
    this.exam = exam;
    this.els.title.textContent = `Report — exam ${exam.exam_id}`;
    this.els.empty.hidden = true;
    this.els.form.hidden = false;
    this._hideConflict();
    this._setEnabled(false);
    this._message("Loading report…", "info");
    try {
      const report = await api.report(exam.exam_id);
      if (seq !== this._loadSeq) return;
      this._apply(report);
      this._message(report ? null : "No report yet for this exam.", "info");
    } catch (err) {
      if (seq !== this._loadSeq) return;
      if (err instanceof ApiError && err.status === 403) {
        this.els.form.hidden = true;
        this.els.empty.hidden = false;
        this.els.empty.textContent = `Reports of this exam are not available to you (${err.detail}).`;
        this._message(null);
        return;
      }
      // Keep the form disabled (saving without knowing the revision would only conflict) and
      // offer the reload button.
      this._message("Report not loaded", "error");
      this.els.conflictText.textContent = `Could not load the report: ${err.message}`;
      this.els.conflict.hidden = false;
      return;
    }
    if (seq === this._loadSeq) this._setEnabled(true);
  }

  async reload() {
    if (!this.exam) return;
    const yours = this._values();
    await this.load(this.exam);
    // Keep what was typed, to copy from.
    this.els.yoursText.value = `Findings:\n${yours.findings}\n\nDiagnosis:\n${yours.diagnosis}`;
    this.els.yours.hidden = !(yours.findings || yours.diagnosis);
  }

  async save() {
    if (!this.examId || this.busy) return;
    const values = this._values();
    const payload = { ...values, expected_revision: this.revision };
    this.busy = true;
    this._setEnabled(false);
    this._message("Saving…", "info");
    const examId = this.examId;
    try {
      const report = await api.saveReport(examId, payload);
      if (examId !== this.examId) return;
      this._hideConflict();
      this._apply(report);
      this._message(`Saved — revision ${report.revision}${report.status === "final" ? " (final)" : ""}`, "ok");
      this.onSaved(report);
    } catch (err) {
      if (examId !== this.examId) return;
      if (err instanceof ApiError && err.status === 409) {
        this._showConflict(err.detail);
        this._message("Not saved: conflict", "error");
      } else if (err instanceof ApiError && err.status === 403) {
        this._message(`Not saved: you are not allowed to change this report (${err.detail})`, "error");
      } else if (err instanceof ApiError && err.status === 422) {
        this._message(`Not saved: the report is invalid (${err.detail})`, "error");
      } else {
        this._message(`Not saved: ${err.message}`, "error");
      }
    } finally {
      this.busy = false;
      if (examId === this.examId) this._setEnabled(true);
    }
  }

  _values() {
    const e = this.els;
    return {
      findings: e.findings.value,
      diagnosis: e.diagnosis.value,
      body_part: e.bodyPart.value.trim(), // a string ("" when not set), as the API wants
      status: e.status.value,
    };
  }

  _apply(report) {
    this.report = report;
    this.revision = report ? report.revision : null;
    this.dirty = false;
    this._fill(report, this.exam);
  }

  _fill(report, exam) {
    const e = this.els;
    e.findings.value = report ? report.findings || "" : "";
    e.diagnosis.value = report ? report.diagnosis || "" : "";
    e.bodyPart.value = report ? report.body_part || "" : (exam && exam.body_part) || "";
    e.status.value = report && report.status === "final" ? "final" : "draft";
    e.yours.hidden = true;
    e.yoursText.value = "";
    if (report) {
      const when = report.updated_at ? new Date(report.updated_at) : null;
      e.meta.textContent = `Revision ${report.revision} · ${report.status} · by ${report.author || "unknown"}` +
        (when && !Number.isNaN(when.getTime()) ? ` · ${when.toLocaleString()}` : "");
    } else {
      e.meta.textContent = exam ? "New report (not saved yet)" : "";
    }
  }

  _showConflict(detail) {
    this.conflict = detail;
    this.els.conflictText.textContent =
      `Conflict: someone else saved this report after you opened it (${detail}). ` +
      "Your text has not been saved. Reload the report to see the current version; your text stays available to copy.";
    this.els.conflict.hidden = false;
  }

  _hideConflict() {
    this.conflict = null;
    this.els.conflict.hidden = true;
  }

  _message(text, kind = "info") {
    this.lastMessage = text ? { text, kind } : null;
    const m = this.els.message;
    m.textContent = text || "";
    m.dataset.kind = text ? kind : "";
  }

  _setEnabled(on) {
    for (const el of [this.els.findings, this.els.diagnosis, this.els.bodyPart, this.els.status, this.els.save]) {
      el.disabled = !on;
    }
  }
}
