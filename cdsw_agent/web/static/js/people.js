/* Adding people by user name (team members, project collaborators) and changing their role. */
"use strict";
(() => {
  async function userId(username) {
    const found = await CDSW.api("GET", "/api/v1/users?q=" + encodeURIComponent(username) + "&limit=1000");
    const user = found.find((u) => u.username === username);
    if (!user) throw new CDSW.ApiFailure(404, "no user named " + username, [{ field: "username", message: "unknown" }]);
    return user.id;
  }

  document.addEventListener("submit", async (e) => {
    const form = e.target.closest("form[data-add-user]");
    if (!form) return;
    e.preventDefault();
    CDSW.clearErrors(form);
    const body = CDSW.serialize(form);
    try {
      const id = await userId(body.username.trim());
      delete body.username;
      const [method, url] = form.dataset.addUser.split(" ");
      await CDSW.api(method, url.replace("{user_id}", id), body);
      CDSW.then(form.dataset.then || "reload", null, form);
    } catch (err) {
      CDSW.showError(form, err);
    }
  });

  document.addEventListener("change", async (e) => {
    const select = e.target.closest("select[data-role-url]");
    if (!select) return;
    const [method, url] = select.dataset.roleUrl.split(" ");
    CDSW.clearErrors(select.closest("tr"));
    try {
      await CDSW.api(method, url, { role: select.value });
      window.location.reload();
    } catch (err) {
      CDSW.showError(select.closest("tr"), err, select);
    }
  });
})();
