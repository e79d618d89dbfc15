// tideflow dashboard: live regions fed by Server-Sent Events, JSON editors that validate as
// you type, and actions that confirm in a dialog, call /v1 and show their result.
"use strict";

function liveRegions() {
  document.querySelectorAll("[data-stream]").forEach((region) => {
    const url = region.dataset.stream;
    if (!url) return;
    let first = true;
    let busy = false;
    const source = new EventSource(url, { withCredentials: true });
    source.addEventListener("change", async (message) => {
      if ("reload" in region.dataset) {
        // A page waiting for a run to exist: load it once the stream describes one.
        if (JSON.parse(message.data) !== null) { source.close(); location.reload(); }
        return;
      }
      // The first message describes what the page already shows.
      if (first) { first = false; return; }
      if (busy) return;
      busy = true;
      try {
        const answer = await fetch(location.href, { headers: { "X-Tideflow-Fragment": "1" } });
        if (answer.ok) region.innerHTML = await answer.text();
      } finally { busy = false; }
    });
  });
}

function checkJson(area) {
  const message = area.parentElement.querySelector(".json-error") || area.nextElementSibling;
  let value;
  let problem = "";
  try {
    value = JSON.parse(area.value);
    if (area.dataset.json === "event") {
      const events = Array.isArray(value) ? value : [value];
      if (!events.length) problem = "Give at least one event.";
      for (const e of events) {
        if (!e || typeof e !== "object" || Array.isArray(e)) { problem = "Each event must be a JSON object."; break; }
        if (typeof e.name !== "string" || !e.name) { problem = "Each event needs a \"name\" (a string)."; break; }
        if (e.data !== undefined && (typeof e.data !== "object" || e.data === null || Array.isArray(e.data))) {
          problem = "\"data\" must be a JSON object."; break;
        }
      }
    } else if (typeof value !== "object" || value === null || Array.isArray(value)) {
      problem = "Give a JSON object, e.g. {}.";
    }
  } catch (error) {
    problem = "Not valid JSON: " + error.message;
  }
  area.setAttribute("aria-invalid", problem ? "true" : "false");
  if (message && message.classList.contains("json-error")) message.textContent = problem;
  return problem ? undefined : value;
}

function confirmDialog(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  });
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  a.className = "mono";
  return a;
}

function showResult(target, ok, body) {
  target.replaceChildren();
  target.classList.toggle("error", !ok);
  if (!ok) {
    target.append("Failed: " + (body && body.error ? body.error : "the API answered with an error"));
    return;
  }
  if (body.run_id) {
    target.append("Started run ", link("/runs/" + body.run_id, body.run_id));
  } else if (body.ids) {
    target.append("Sent event" + (body.ids.length > 1 ? "s " : " "));
    body.ids.forEach((id) => target.append(link("/events/" + id, id), " "));
  } else if (body.data && body.data.status) {
    target.append("Run is now " + body.data.status + ".");
  } else {
    target.append("Done.");
  }
}

async function act(button) {
  const target = document.getElementById(button.dataset.result);
  let body;
  if (button.dataset.body) {
    const value = checkJson(document.getElementById(button.dataset.body));
    if (value === undefined) return;
    body = button.dataset.wrap ? { [button.dataset.wrap]: value } : value;
  }
  if (!(await confirmDialog(button.dataset.confirm))) return;
  button.disabled = true;
  try {
    const answer = await fetch(button.dataset.url, {
      method: button.dataset.method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let parsed = {};
    try { parsed = await answer.json(); } catch (error) { parsed = { error: answer.statusText }; }
    showResult(target, answer.ok, parsed);
  } catch (error) {
    showResult(target, false, { error: String(error) });
  } finally {
    button.disabled = false;
  }
}

// A `datetime-local` value, which the page labels as UTC, as an RFC 3339 time.
function utc(value) {
  return (value.length === 16 ? value + ":00" : value) + "Z";
}

async function followCancellation(target, id) {
  for (;;) {
    const answer = await fetch("/v1/cancellations/" + encodeURIComponent(id), { credentials: "same-origin" });
    let parsed = {};
    try { parsed = await answer.json(); } catch (error) { parsed = { error: answer.statusText }; }
    if (!answer.ok) { showResult(target, false, parsed); return; }
    const c = parsed.data;
    target.classList.remove("error");
    target.textContent = `Cancellation ${c.id}: ${c.status}, ${c.cancelled} run${c.cancelled === 1 ? "" : "s"} cancelled.`;
    if (c.status === "Completed") return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function bulkCancel(form) {
  const target = document.getElementById(form.dataset.result);
  const fields = form.elements;
  const body = {
    function_id: fields.function_id.value,
    started_after: utc(fields.started_after.value),
    started_before: utc(fields.started_before.value),
  };
  const condition = fields.if_exp.value.trim();
  if (condition) body.if_exp = condition;
  const question = `Cancel every run of ${body.function_id} queued from ${body.started_after} until ` +
    `${body.started_before}${condition ? " whose event matches " + condition : ""}? ` +
    "Runs that have ended are left as they are.";
  if (!(await confirmDialog(question))) return;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const answer = await fetch("/v1/cancellations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let parsed = {};
    try { parsed = await answer.json(); } catch (error) { parsed = { error: answer.statusText }; }
    if (!answer.ok) { showResult(target, false, parsed); return; }
    await followCancellation(target, parsed.id);
  } catch (error) {
    showResult(target, false, { error: String(error) });
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  liveRegions();
  document.querySelectorAll("textarea[data-json]").forEach((area) => {
    area.addEventListener("input", () => checkJson(area));
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button);
  });
  // The browser has checked the form's required fields before it fires `submit`.
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-bulk-cancel]");
    if (!form) return;
    event.preventDefault();
    bulkCancel(form);
  });
});
