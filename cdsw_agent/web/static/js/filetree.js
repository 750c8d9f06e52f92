/* The project file tree: folders open on click and load their entries from the files API. */
"use strict";
(() => {
  function item(root, entry) {
    const projectId = root.dataset.project;
    const li = document.createElement("li");
    li.className = entry.type;
    if (entry.type === "directory") {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "tree-folder";
      b.dataset.path = entry.path;
      b.setAttribute("aria-expanded", "false");
      b.textContent = entry.name;
      li.appendChild(b);
    } else {
      const a = document.createElement("a");
      a.href = root.dataset.linkQuery !== undefined ? root.dataset.linkQuery + encodeURIComponent(entry.path)
        : "/projects/" + projectId + "/files/" + entry.path.split("/").map(encodeURIComponent).join("/");
      a.dataset.path = entry.path;
      a.textContent = entry.name;
      li.appendChild(a);
    }
    return li;
  }

  async function toggle(button) {
    const li = button.parentElement;
    const open = button.getAttribute("aria-expanded") === "true";
    const existing = li.querySelector(":scope > ul");
    if (open) { button.setAttribute("aria-expanded", "false"); if (existing) existing.hidden = true; return; }
    button.setAttribute("aria-expanded", "true");
    if (existing) { existing.hidden = false; return; }
    const root = button.closest("ul.tree[data-project]");
    const projectId = root.dataset.project;
    const ul = document.createElement("ul");
    li.appendChild(ul);
    try {
      const listing = await CDSW.api("GET", "/api/v1/projects/" + projectId + "/files?path=" + encodeURIComponent(button.dataset.path));
      if (!listing.entries.length) {
        const empty = document.createElement("li");
        empty.className = "muted";
        empty.textContent = "empty";
        ul.appendChild(empty);
      }
      listing.entries.forEach((e) => ul.appendChild(item(root, e)));
    } catch (err) {
      ul.remove();
      button.setAttribute("aria-expanded", "false");
      CDSW.showError(li, err, button);
    }
  }

  document.addEventListener("click", (e) => {
    const button = e.target.closest(".tree-folder");
    if (button) toggle(button);
  });
})();
