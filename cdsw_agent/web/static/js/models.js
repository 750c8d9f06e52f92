/* Models: create-build-deploy from the New Model form, the build log with progress, following a
   deployment, access keys, and the test form that calls POST /model like any caller would. */
"use strict";
(() => {
  const KEY_STORE = "cdsw-model-key-";  // sessionStorage: the new key, shown once on the next page
  const BUILD_ACTIVE = ["queued", "building"];
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // --- New Model: create, start its build, then follow it on the model's page ---------------
  const form = document.getElementById("model-form");
  if (form) {
    const progress = document.getElementById("model-progress");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      CDSW.clearErrors(form);
      let body;
      try {
        body = CDSW.serialize(form);
      } catch (err) {
        CDSW.showError(form, new CDSW.ApiFailure(0, "example input: not valid JSON (" + err.message + ")",
          [{ field: "example_input" }]));
        return;
      }
      const replicas = form.querySelector('[name="replicas"]').value || "1";
      const profile = form.querySelector('[name="profile_id"]').value;
      const base = "/api/v1/projects/" + form.dataset.project + "/models";
      form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      let model;
      try {
        progress.textContent = "creating the model…";
        model = await CDSW.api("POST", base, body);
        window.sessionStorage.setItem(KEY_STORE + model.id, model.access_key);
        progress.textContent = "starting its build…";
        await CDSW.api("POST", base + "/" + model.id + "/builds");
      } catch (err) {
        progress.textContent = model ? "the model was created but its build did not start" : "";
        CDSW.showError(form, err);
        form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        if (!model) return;
      }
      const query = "?deploy=" + encodeURIComponent(replicas) + (profile ? "&profile=" + encodeURIComponent(profile) : "");
      window.location.assign("/projects/" + form.dataset.project + "/models/" + model.id + query);
    });
    return;
  }

  const page = document.getElementById("model-page");
  if (!page) return;
  const modelApi = "/api/v1/projects/" + page.dataset.project + "/models/" + page.dataset.model;
  const params = new URLSearchParams(window.location.search);

  function showKey(key) {
    document.getElementById("new-access-key-value").textContent = key;
    document.getElementById("new-access-key").hidden = false;
    document.getElementById("test-key").value = key;
  }
  const stored = window.sessionStorage.getItem(KEY_STORE + page.dataset.model);
  if (stored) { showKey(stored); window.sessionStorage.removeItem(KEY_STORE + page.dataset.model); }

  // --- the latest build's log, then the deployment the New Model form asked for -------------
  const log = document.getElementById("build-log");
  async function deployAsked() {
    const body = { replicas: Number(params.get("deploy")) };
    if (params.get("profile")) body.profile_id = Number(params.get("profile"));
    try {
      await CDSW.api("POST", modelApi + "/deployment", body);
    } catch (err) {
      CDSW.showError(document.getElementById("deployment"), err, document.querySelector("#deployment h2"));
      return;
    }
    window.location.replace(window.location.pathname);
  }

  const pending = document.getElementById("deploy-pending");
  if (pending && params.get("deploy")) {
    pending.textContent = "Deploys " + params.get("deploy") + " replica(s) when the build succeeds.";
  }
  if (log) {
    let offset = 0;
    const startedActive = BUILD_ACTIVE.includes(page.dataset.buildStatus);
    const tail = async () => {
      let buildStatus = page.dataset.buildStatus;
      try {
        const response = await CDSW.api("GET", log.dataset.url + "?offset=" + offset, null, { raw: true });
        const text = await response.text();
        offset = Number(response.headers.get("X-Log-Offset") || offset);
        buildStatus = response.headers.get("X-Build-Status") || buildStatus;
        if (text) { log.appendChild(document.createTextNode(text)); log.scrollTop = log.scrollHeight; }
      } catch (err) {
        CDSW.showError(log.parentElement, err, log);
        return;
      }
      const badge = document.querySelector("#build-status .status-badge");
      if (badge) { badge.textContent = buildStatus; badge.className = "status-badge s-" + buildStatus; }
      if (BUILD_ACTIVE.includes(buildStatus)) { window.setTimeout(tail, 1000); return; }
      document.getElementById("build-progress").hidden = true;
      if (buildStatus === "succeeded" && params.get("deploy") && !page.dataset.deploymentStatus) deployAsked();
      else if (startedActive) window.location.replace(window.location.pathname);
    };
    tail();
  } else if (params.get("deploy")) {
    window.history.replaceState(null, "", window.location.pathname);
  }

  // --- a deployment on its way: follow it ---------------------------------------------------
  async function followDeployment() {
    try {
      await CDSW.refresh("#deployment, #deployment-status");
    } catch (err) {
      return;
    }
    const badge = document.querySelector("#deployment-status .status-badge");
    if (badge && badge.textContent.trim() === "deploying") window.setTimeout(followDeployment, 2000);
  }
  if (page.dataset.deploymentStatus === "deploying") window.setTimeout(followDeployment, 2000);

  // --- access keys and builds ---------------------------------------------------------------
  page.addEventListener("click", async (e) => {
    const button = e.target.closest("#new-key, #build-again");
    if (!button) return;
    const scope = button.closest("[data-error-scope]");
    CDSW.clearErrors(scope);
    button.disabled = true;
    try {
      if (button.id === "new-key") {
        const created = await CDSW.api("POST", modelApi + "/access-keys", {});
        showKey(created.access_key);
        await CDSW.refresh("#access-keys");
      } else {
        await CDSW.api("POST", modelApi + "/builds");
        window.location.reload();
      }
    } catch (err) {
      CDSW.showError(scope, err, button);
    } finally {
      button.disabled = false;
    }
  });

  // --- the test form: the caller's view of POST /model -------------------------------------
  const test = document.getElementById("test-form");
  const answer = document.getElementById("test-answer");
  const testStatus = document.getElementById("test-status");
  test.addEventListener("submit", async (e) => {
    e.preventDefault();
    CDSW.clearErrors(test);
    let request;
    try {
      request = JSON.parse(document.getElementById("test-request").value || "null");
    } catch (err) {
      CDSW.showError(test, new CDSW.ApiFailure(0, "the request is not valid JSON: " + err.message, [{ field: "request" }]));
      return;
    }
    const started = performance.now();
    testStatus.textContent = "calling…";
    let response, body;
    try {
      response = await fetch("/model", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify({ accessKey: document.getElementById("test-key").value.trim(), request: request }),
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      testStatus.textContent = "";
      CDSW.showError(test, new CDSW.ApiFailure(0, "the server cannot be reached; check your connection and retry"));
      return;
    }
    const ms = Math.round(performance.now() - started);
    testStatus.textContent = response.status + " " + (response.ok ? "OK" : response.statusText) + " in " + ms + " ms";
    answer.hidden = false;
    answer.classList.toggle("failed", !response.ok);
    answer.textContent = body === null ? "(no JSON answer)" : JSON.stringify(body, null, 2);
  });
})();
