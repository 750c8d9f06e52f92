/* Account page: show a new API key once, then list it; confirm a password change. */
"use strict";
document.addEventListener("key-created", (e) => {
  const box = document.getElementById("new-key");
  document.getElementById("new-key-value").textContent = e.detail.key;
  box.hidden = false;
  const tbody = document.querySelector("#keys tbody");
  const empty = tbody.querySelector("tr.empty");
  if (empty) empty.remove();
  const row = document.createElement("tr");
  row.dataset.key = e.detail.name;
  [e.detail.name, e.detail.prefix + "…", e.detail.scope, "just now", e.detail.expires_at.slice(0, 10), "—", ""]
    .forEach((text) => { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); });
  tbody.appendChild(row);
  document.getElementById("key-form").reset();
});
document.addEventListener("password-changed", () => {
  const form = document.getElementById("password-form");
  const revoked = form.querySelector("[name=revoke_api_keys]").checked;
  const ok = document.getElementById("password-ok");
  ok.textContent = revoked ? "Password changed; your other browsers were signed out and your API keys revoked."
    : "Password changed; your other browsers were signed out.";
  ok.hidden = false;
  if (revoked) {
    document.querySelectorAll("#keys tbody tr[data-key] td:last-child").forEach((td) => {
      td.textContent = "";
      const badge = document.createElement("span");
      badge.className = "badge muted";
      badge.textContent = "revoked";
      td.appendChild(badge);
    });
  }
  form.reset();
});
