// NEX Backup dashboard: progressive additions only; every page works without this.
// Actions on a target start through the JSON API and follow the job live (server-sent
// events); when it ends, the snapshot and job tables are refreshed in place.
"use strict";

function human(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

let refreshing = null;

// Follow each running job in a live jobs table: its phase and bytes as they come.
function followRows() {
  for (const tr of document.querySelectorAll("#jobs tr.job-running[data-job]")) {
    if (tr.dataset.following) continue;
    tr.dataset.following = "1";
    const es = new EventSource("/api/v1/jobs/" + encodeURIComponent(tr.dataset.job) + "/events");
    const cell = tr.querySelector(".phase");
    es.addEventListener("progress", (e) => {
      const p = JSON.parse(e.data);
      if (cell) cell.textContent = "running: " + p.phase + (p.bytes_done ? ", " + human(p.bytes_done) : "");
    });
    es.addEventListener("outcome", () => { es.close(); refreshSoon(); });
  }
}

function refreshSoon() {
  if (refreshing) return;
  refreshing = setTimeout(async () => { refreshing = null; await refreshTables(); }, 300);
}

async function refreshTables() {
  const r = await fetch(location.pathname + location.search, { credentials: "same-origin" });
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString(await r.text(), "text/html");
  for (const id of ["snapshots", "jobs"]) {
    const now = document.getElementById(id), fresh = doc.getElementById(id);
    if (now && fresh) now.innerHTML = fresh.innerHTML;
  }
  followRows();
}

function follow(live, id, kind) {
  live.dataset.job = id;
  live.dataset.state = "running";
  live.textContent = "Job " + id + ": dispatched";
  const es = new EventSource("/api/v1/jobs/" + encodeURIComponent(id) + "/events");
  es.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    live.textContent = "Job " + id + ": " + p.phase + (p.bytes_done ? ", " + human(p.bytes_done) : "");
  });
  es.addEventListener("outcome", async (e) => {
    es.close();
    const o = JSON.parse(e.data);
    const secs = (o.duration_ms / 1000).toFixed(1);
    let text;
    if (!o.ok) text = "Job " + id + " failed: " + (o.error || "unknown error");
    else if (kind === "drill") {
      const rto = Number(live.dataset.rto || 0) / 1000;
      text = "Drill passed: restored and verified in " + secs + " s (RTO " + secs + " s against a target of " + rto + " s)";
    } else text = "Job " + id + " succeeded in " + secs + " s" + (o.snapshot_id ? ": snapshot " + o.snapshot_id : "");
    live.textContent = text;
    live.dataset.state = o.ok ? "succeeded" : "failed";
    await refreshTables();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.querySelector("#jobs[data-live]")) {
    // New and finished jobs (from the controller's event bus) refresh the table.
    const bus = new EventSource("/api/v1/events");
    bus.addEventListener("job-started", refreshSoon);
    bus.addEventListener("job-finished", refreshSoon);
    followRows();
  }
  const live = document.getElementById("live");
  if (!live) return;
  for (const f of document.querySelectorAll("form[data-action]")) {
    if (f.dataset.action === "restore") continue; // confirmed on its own page
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const token = f.querySelector("[name=csrf]").value;
      const r = await fetch("/api/v1" + f.getAttribute("action"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": token },
        body: new URLSearchParams(new FormData(f)),
      });
      const j = await r.json().catch(() => ({ error: "HTTP " + r.status }));
      if (!r.ok) {
        live.dataset.state = "refused";
        live.textContent = "Not started: " + j.error;
        return;
      }
      follow(live, j.job_id, f.dataset.action);
    });
  }
  if (live.dataset.job) follow(live, live.dataset.job, "");
});
