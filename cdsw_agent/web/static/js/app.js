/* The workbench pages' small client: calls the JSON API under /api/v1 with the session's CSRF
   token and shows API errors ({"error", "detail"}) next to the field or button that caused them.

   Declarative hooks used by the templates:
     <form data-api="METHOD /api/v1/...{field}..." data-then="reload|redirect:/url/{id}|event:name">
       fields: name="x" data-type="string|int|float|bool|lines|env|list|json" data-omit-empty
     <button data-api-action="METHOD /api/v1/..." data-confirm="..." data-then="...">
   data-then="refresh:#a,#b" re-renders those elements (by id) from a fresh copy of the page.
*/
"use strict";

const CDSW = (() => {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  class ApiFailure extends Error {
    constructor(status, error, detail) {
      super(error || ("request failed with status " + status));
      this.status = status;
      this.detail = detail;
    }
  }

  async function failureOf(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (body && typeof body.error === "string") return new ApiFailure(response.status, body.error, body.detail);
    return new ApiFailure(response.status, "the server answered " + response.status + " " + response.statusText);
  }

  /* One call to the API; resolves to the parsed JSON (or text, or null for 204). */
  async function api(method, url, body, options) {
    const headers = { "X-CSRF-Token": csrf(), "Accept": "application/json" };
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined && body !== null) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      throw new ApiFailure(0, "the server cannot be reached; check your connection and retry");
    }
    if (!response.ok) throw await failureOf(response);
    if (options && options.raw) return response;
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    return type.includes("application/json") ? response.json() : response.text();
  }

  /* multipart upload with progress (fetch cannot report upload progress) */
  function upload(url, formData, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
      xhr.onerror = () => reject(new ApiFailure(0, "the upload failed; check your connection and retry"));
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new ApiFailure(xhr.status, body && body.error ? body.error : "upload failed (" + xhr.status + ")", body && body.detail));
      };
      xhr.send(formData);
    });
  }

  // --- showing errors next to what caused them ---------------------------------------------

  function clearErrors(root) {
    root.querySelectorAll(".field-error, .action-error").forEach((el) => el.remove());
    root.querySelectorAll(".form-error").forEach((el) => { el.textContent = ""; el.hidden = true; });
    root.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  }

  function fieldElement(root, field) {
    if (!field) return null;
    const candidates = [field, field.split(".")[0], field.replace(/^values\./, "")];
    for (const name of candidates) {
      const el = root.querySelector('[data-error-for="' + CSS.escape(name) + '"]') ||
                 root.querySelector('[name="' + CSS.escape(name) + '"]');
      if (el) return el;
    }
    return null;
  }

  function note(after, text, cls) {
    const div = document.createElement("div");
    div.className = cls;
    div.setAttribute("role", "alert");
    div.textContent = text;
    after.insertAdjacentElement("afterend", div);
    return div;
  }

  /* Puts err next to the field it names, else in the form's .form-error, else after `anchor`. */
  function showError(root, err, anchor) {
    const details = Array.isArray(err.detail) ? err.detail : [];
    const first = details.find((d) => d && d.field);
    const target = first ? fieldElement(root, first.field) : null;
    if (target) {
      target.setAttribute("aria-invalid", "true");
      const holder = target.closest("label, .field") || target;
      note(holder, err.message, "field-error");
      if (target.focus) target.focus();
      return;
    }
    const box = root.querySelector(".form-error");
    if (box) { box.textContent = err.message; box.hidden = false; return; }
    note(anchor || root, err.message, "action-error");
  }

  // --- forms -------------------------------------------------------------------------------

  function valueOf(el) {
    const type = el.dataset.type || "string";
    const raw = el.type === "checkbox" ? el.checked : el.value;
    switch (type) {
      case "bool": return Boolean(raw);
      case "int": return raw === "" ? null : Number.parseInt(raw, 10);
      case "float": return raw === "" ? null : Number.parseFloat(raw);
      case "lines": return String(raw).split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
      case "env": {
        const out = {};
        String(raw).split("\n").map((s) => s.trim()).filter(Boolean).forEach((line) => {
          const i = line.indexOf("=");
          if (i < 0) out[line] = ""; else out[line.slice(0, i).trim()] = line.slice(i + 1);
        });
        return out;
      }
      case "json": return raw === "" ? null : JSON.parse(raw);
      default: return raw;
    }
  }

  function serialize(form) {
    const body = {};
    form.querySelectorAll("[name]").forEach((el) => {
      if (el.disabled || el.closest("fieldset[disabled]") || el.dataset.skip !== undefined) return;
      if (el.type === "radio" && !el.checked) return;
      if (el.dataset.type === "list") {
        body[el.name] = body[el.name] || [];
        if (el.checked) body[el.name].push(el.value);
        return;
      }
      const v = valueOf(el);
      if ((v === null || v === "") && el.dataset.omitEmpty !== undefined) return;
      body[el.name] = v;
    });
    return body;
  }

  /* "POST /api/v1/x/{name}" with body {name: "A"} -> ["POST", "/api/v1/x/A", body without name] */
  function target(spec, body) {
    const [method, template] = spec.trim().split(/\s+/, 2);
    const url = template.replace(/\{(\w+)\}/g, (_, key) => {
      const v = body[key];
      delete body[key];
      return encodeURIComponent(v === undefined || v === null ? "" : v);
    });
    return [method.toUpperCase(), url];
  }

  /* Re-renders the elements matching `selector` (each with an id) from a fresh copy of this
     page: the server's templates stay the one renderer, and nothing in the copy runs. */
  async function refresh(selector) {
    let response;
    try {
      response = await fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
    } catch (e) {
      throw new ApiFailure(0, "the server cannot be reached; check your connection and retry");
    }
    if (!response.ok) throw await failureOf(response);
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    document.querySelectorAll(selector).forEach((el) => {
      const fresh = el.id ? doc.getElementById(el.id) : null;
      if (fresh) el.replaceWith(document.importNode(fresh, true));
    });
  }

  function then(spec, result, source) {
    if (!spec || spec === "reload") { window.location.reload(); return; }
    if (spec.startsWith("refresh:")) {
      const scope = source.closest("[data-error-scope]") || source.parentElement || document.body;
      refresh(spec.slice(8)).catch((err) => showError(scope, err, source));
      return;
    }
    if (spec.startsWith("redirect:")) {
      const url = spec.slice(9).replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(result && result[k] !== undefined ? result[k] : ""));
      window.location.assign(url);
      return;
    }
    if (spec.startsWith("event:")) {
      source.dispatchEvent(new CustomEvent(spec.slice(6), { bubbles: true, detail: result }));
      return;
    }
    if (spec === "none") return;
    throw new Error("unknown data-then " + spec);
  }

  function busy(el, on) {
    el.querySelectorAll("button, input[type=submit]").forEach((b) => { b.disabled = on; });
    if (el.tagName === "BUTTON") el.disabled = on;
    el.classList.toggle("busy", on);
  }

  async function submitForm(form) {
    clearErrors(form);
    let body;
    try {
      body = form.cdswSerialize ? form.cdswSerialize(form) : serialize(form);
    } catch (e) {
      showError(form, new ApiFailure(0, "invalid input: " + e.message));
      return;
    }
    const [method, url] = target(form.dataset.api, body);
    busy(form, true);
    try {
      const result = await api(method, url, method === "DELETE" ? null : body);
      then(form.dataset.then, result, form);
    } catch (err) {
      showError(form, err);
    } finally {
      busy(form, false);
    }
  }

  async function runAction(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const scope = button.closest("[data-error-scope]") || button.parentElement;
    clearErrors(scope);
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : null;
    const [method, url] = target(button.dataset.apiAction, body || {});
    busy(button, true);
    try {
      const result = await api(method, url, body);
      then(button.dataset.then, result, button);
    } catch (err) {
      showError(scope, err, button);
    } finally {
      busy(button, false);
    }
  }

  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form[data-api]");
    if (!form) return;
    e.preventDefault();
    submitForm(form);
  });

  document.addEventListener("click", (e) => {
    const button = e.target.closest("[data-api-action]");
    if (button) { e.preventDefault(); runAction(button); return; }
    const signout = e.target.closest("[data-signout]");
    if (signout) {
      e.preventDefault();
      api("POST", "/api/v1/auth/signout").finally(() => window.location.assign("/signin"));
    }
  });

  return { api, upload, showError, clearErrors, serialize, refresh, then, ApiFailure };
})();
