/* Account > Hadoop Authentication: sends the principal with a password or a keytab file
   (multipart) to PUT /api/v1/account/kerberos and shows the KDC's refusal in one line. */
"use strict";
(() => {
  const form = document.getElementById("krb-form");
  if (!form) return;
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const method = () => form.querySelector("[name=method]:checked").value;
  const show = () => {
    document.getElementById("krb-password-field").hidden = method() !== "password";
    document.getElementById("krb-keytab-field").hidden = method() !== "keytab";
  };
  form.querySelectorAll("[name=method]").forEach((r) => r.addEventListener("change", show));
  show();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = form.querySelector(".form-error");
    error.hidden = true;
    const data = new FormData();
    data.append("principal", form.principal.value);
    if (method() === "password") {
      data.append("password", form.password.value);
    } else if (form.keytab.files.length) {
      data.append("keytab", form.keytab.files[0]);
    } else {
      error.textContent = "choose a keytab file";
      error.hidden = false;
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const response = await fetch("/api/v1/account/kerberos", {
        method: "PUT", body: data, credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf(), "Accept": "application/json" } });
      if (response.ok) { window.location.reload(); return; }
      let body = null;
      try { body = await response.json(); } catch (err) { body = null; }
      error.textContent = body && body.error ? body.error : "the server answered " + response.status;
    } catch (err) {
      error.textContent = "the server cannot be reached; check your connection and retry";
    }
    error.hidden = false;
    button.disabled = false;
  });
})();
