/* Job form: the schedule is manual, cron (with a time zone) or after a parent job; only the
   chosen kind's fields are sent, the others are cleared (null) so an edit can switch kinds. */
"use strict";
(() => {
  const form = document.getElementById("job-form");
  const kind = () => form.querySelector('input[name="schedule_kind"]:checked').value;
  const show = () => form.querySelectorAll("[data-kind]").forEach((el) => { el.hidden = el.dataset.kind !== kind(); });
  form.addEventListener("change", (e) => { if (e.target.name === "schedule_kind") show(); });
  show();

  form.cdswSerialize = (f) => {
    const body = CDSW.serialize(f);
    if (kind() !== "cron") body.schedule = null;
    if (kind() !== "dependent") body.parent_job_id = null;
    if (kind() === "dependent" && body.parent_job_id === null) {
      throw new Error("choose the job this one runs after");
    }
    if (body.timeout_minutes === 0) body.timeout_minutes = null;
    return body;
  };
})();
