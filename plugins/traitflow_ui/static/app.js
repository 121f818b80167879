// Traitflow "Traits" page: plain DOM, no build step; charts.js draws the charts. Every value from the API is inserted with
// textContent (labels and ids are arbitrary text), and every URL is relative to the page, so it
// works under any Airflow base_url.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function td(text, className) {
  return el("td", text, className);
}

function fmtDate(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace("T", " ").replace(/:00(\.000)?Z$/, "Z");
}

function fmtNum(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// The evidence behind a served profile, e.g. "12 events · confidence 0.71 · cold start: few_tokens":
// a profile from one or two events is a guess and must not read like a fact.
function fmtEvidence(c) {
  const parts = [`${c.n_events} event${c.n_events === 1 ? "" : "s"}`];
  if (c.confidence !== null && c.confidence !== undefined) parts.push(`confidence ${fmtNum(c.confidence, 2)}`);
  if (c.cold_start && c.cold_start !== "none") parts.push(`cold start: ${c.cold_start}`);
  return parts.join(" · ");
}

function thinNote(minEvents) {
  return minEvents > 1 ? `customers with fewer than ${minEvents} events are left out` : "";
}

function meter(fraction) {
  const outer = el("div", null, "meter");
  const inner = el("span");
  inner.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  outer.appendChild(inner);
  return outer;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// message: "<detail> (HTTP <status>)" for the error area; detail alone for an inline note.
class ApiError extends Error {
  constructor(status, detail) {
    super(`${detail} (HTTP ${status})`);
    this.status = status;
    this.detail = detail;
  }
}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    let detail = body && body.detail !== undefined ? body.detail : response.statusText;
    if (Array.isArray(detail)) {
      // FastAPI validation errors: [{loc: [...], msg: "..."}]
      detail = detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
    if (response.status === 401) detail = "Your Airflow session has expired: reload the page to log in again.";
    throw new ApiError(response.status, detail);
  }
  return body;
}

// ------------------------------------------------------------------------------------- traits

const traitLabels = new Map();

async function loadTraits() {
  const tbody = $("traits").querySelector("tbody");
  tbody.replaceChildren();
  let data;
  try {
    data = await api("api/traits");
  } catch (e) {
    const row = el("tr");
    const cell = td(e.status === 404 ? "No active model yet: run traitflow_weekly_retrain." : e.message);
    cell.colSpan = 6;
    row.appendChild(cell);
    tbody.appendChild(row);
    if (e.status !== 404) showError(e.message);
    return;
  }
  for (const t of data.traits) {
    traitLabels.set(t.trait_id, t.label);
    const row = el("tr");
    row.dataset.traitId = String(t.trait_id);
    row.appendChild(td(t.trait_id, "num"));
    row.appendChild(td(t.label));
    row.appendChild(td(t.size.toLocaleString(), "num"));
    const share = td();
    share.appendChild(meter(t.share));
    share.title = t.share === null ? "" : `${(t.share * 100).toFixed(1)}%`;
    row.appendChild(share);
    row.appendChild(td(t.top_products.join(", "), "tags"));
    row.appendChild(td(t.top_categories.filter(Boolean).join(", "), "tags"));
    row.addEventListener("click", () => loadTop(t.trait_id, row));
    tbody.appendChild(row);
  }
  TraitflowCharts.traitSizes(data.traits);
}

async function loadSizeHistory() {
  const note = $("chart-size-history-note");
  try {
    const data = await api("api/charts/trait-sizes?times=90");
    note.textContent = data.times.length ? "" : "No profiles yet.";
    TraitflowCharts.sizeHistory(data);
  } catch (e) {
    note.textContent = e.message;
  }
}

async function loadMap() {
  const note = $("chart-map-note");
  try {
    const data = await api("api/charts/trait-map?n=500");
    note.textContent = `${data.points.length.toLocaleString()} of ${data.n_profiled.toLocaleString()} ` +
      `customers profiled with model ${data.model_version} (the same sample on every load).`;
    TraitflowCharts.traitMap(data, (customerId) => {
      $("customer-id").value = customerId;
      lookup(customerId);
      $("customer-section").scrollIntoView();
    });
  } catch (e) {
    note.textContent = e.status === 404 ? "No active model yet." : e.message;
  }
}

async function loadTop(traitId, row) {
  for (const r of $("traits").querySelectorAll("tr.selected")) r.classList.remove("selected");
  row.classList.add("selected");
  try {
    const data = await api(`api/traits/${encodeURIComponent(traitId)}/top?n=20`);
    $("top-title").textContent = `Top customers of trait ${data.trait_id} · ${data.label}`;
    const list = $("top-list");
    list.replaceChildren();
    for (const c of data.customers) {
      const item = el("li");
      item.appendChild(customerButton(c.customer_id));
      item.appendChild(el("span", ` ${fmtNum(c.score)} · ${fmtEvidence(c)}`, "muted"));
      list.appendChild(item);
    }
    if (!data.customers.length) list.appendChild(el("li", "no customers profiled with this model", "muted"));
    $("top-note").textContent = thinNote(data.min_events);
    $("top").hidden = false;
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

function customerButton(customerId) {
  const button = el("button", customerId);
  button.type = "button";
  button.addEventListener("click", () => {
    $("customer-id").value = customerId;
    lookup(customerId);
  });
  return button;
}

// ----------------------------------------------------------------------------------- customer

async function lookup(customerId) {
  const id = encodeURIComponent(customerId);
  const url = new URL(window.location.href);
  url.searchParams.set("customer", customerId);
  window.history.replaceState(null, "", url);
  let profile;
  try {
    profile = await api(`api/customers/${id}`);
  } catch (e) {
    $("profile").hidden = true;
    showError(e.message);
    return;
  }
  showError("");
  $("profile-title").textContent = `Customer ${profile.customer_id}`;
  $("profile-meta").textContent =
    `as of ${fmtDate(profile.as_of)} · model ${profile.model_version} · ${fmtEvidence(profile)}`;
  const bars = $("profile-bars");
  bars.replaceChildren();
  const traits = [...profile.traits].sort((a, b) => (b.score || 0) - (a.score || 0));
  for (const t of traits) {
    const item = el("li", null, t.trait_id === profile.dominant_trait_id ? "dominant" : "");
    item.appendChild(el("span", `${t.trait_id} · ${t.label}`, "name"));
    item.appendChild(meter(t.score));
    item.appendChild(el("span", fmtNum(t.score), "value"));
    bars.appendChild(item);
  }
  $("profile").hidden = false;
  loadProducts(id);
  loadSimilar(id);
  loadHistory(id);
}

// The customer whose products are listed (URL-encoded, as in the routes) and the last query sent:
// the toggle re-queries that customer, and an answer to an earlier query is dropped.
const productsShown = { customer: null, query: null };

// The profile's top products, best first: name (or id), score, and a mark on those the customer
// had events on. A 409 is a model saved without trait product distributions: a note, not an error.
async function loadProducts(id) {
  const query = `api/customers/${id}/products?n=10&new_only=${$("products-new-only").checked}`;
  Object.assign(productsShown, { customer: id, query });
  const list = $("products-list");
  const note = $("products-note");
  let data;
  try {
    data = await api(query);
  } catch (e) {
    if (productsShown.query !== query) return;
    list.replaceChildren();
    delete list.dataset.newOnly;
    note.textContent = e.status === 409 ? `No product ranking: ${e.detail}` : "";
    if (e.status !== 409) showError(e.message);
    return;
  }
  if (productsShown.query !== query) return;
  list.replaceChildren();
  for (const p of data.products) {
    const item = el("li");
    item.dataset.productId = p.product_id;
    item.appendChild(el("span", p.name ?? p.product_id, "name"));
    item.appendChild(el("span", `${p.name === null ? "" : ` ${p.product_id} ·`} ${fmtNum(p.score)}`, "muted"));
    if (p.had_events) {
      const mark = el("span", "had events", "had");
      mark.title = "The customer already had events on this product.";
      item.appendChild(mark);
    }
    list.appendChild(item);
  }
  if (!data.products.length) list.appendChild(el("li", "no products left to rank", "muted"));
  list.dataset.newOnly = String(data.new_only);
  const had = data.products.filter((p) => p.had_events).length;
  note.textContent = `model ${data.model_version} · ` +
    (data.new_only ? "products the customer had events on are left out"
      : `the customer had events on ${had} of these`);
}

async function loadSimilar(id) {
  const list = $("similar-list");
  list.replaceChildren();
  try {
    const data = await api(`api/customers/${id}/similar?n=10`);
    for (const c of data.similar) {
      const item = el("li");
      item.appendChild(customerButton(c.customer_id));
      item.appendChild(
        el("span", ` ${fmtNum(c.similarity)} · ${c.dominant_label ?? c.dominant_trait_id} · ${fmtEvidence(c)}`, "muted"),
      );
      list.appendChild(item);
    }
    $("similar-note").textContent = thinNote(data.min_events);
  } catch (e) {
    list.appendChild(el("li", e.message, "muted"));
  }
}

async function loadHistory(id) {
  const tbody = $("history").querySelector("tbody");
  tbody.replaceChildren();
  try {
    const data = await api(`api/customers/${id}/history`);
    TraitflowCharts.profile(data.history);
    for (const h of [...data.history].reverse()) {
      const row = el("tr");
      row.appendChild(td(fmtDate(h.as_of)));
      row.appendChild(td(h.model_version, "num"));
      row.appendChild(td(`${h.dominant_trait_id} · ${h.dominant_label ?? ""}`));
      row.appendChild(td(h.n_events, "num"));
      row.appendChild(td(h.cold_start));
      tbody.appendChild(row);
    }
  } catch (e) {
    const row = el("tr");
    const cell = td(e.message, "muted");
    cell.colSpan = 5;
    row.appendChild(cell);
    tbody.appendChild(row);
  }
}

// ------------------------------------------------------------------------------------- models

async function loadModels() {
  const tbody = $("models").querySelector("tbody");
  tbody.replaceChildren();
  try {
    const data = await api("api/models");
    const active = data.models.find((m) => m.status === "active");
    $("model-summary").textContent = active
      ? `Active model ${active.model_version}, trained through ${fmtDate(active.trained_through)}, ` +
        `${active.n_traits} traits, ${active.n_tokens.toLocaleString()} tokens.`
      : "No active model yet: run the traitflow_weekly_retrain DAG.";
    for (const m of data.models) {
      const row = el("tr");
      row.appendChild(td(m.model_version, "num"));
      row.appendChild(td(m.status));
      row.appendChild(td(fmtDate(m.trained_through)));
      row.appendChild(td(fmtTraining(m.training_mode, m.parent_version)));
      row.appendChild(td(m.n_traits, "num"));
      row.appendChild(td(m.n_tokens.toLocaleString(), "num"));
      row.appendChild(td(fmtDate(m.promoted_at)));
      const notes = [];
      const traits = (m.metrics || {}).traits || {};
      const gate = (m.metrics || {}).quality_gate;
      if (gate && gate.candidate_hit_rate !== undefined) notes.push(`hit@10 ${fmtNum(gate.candidate_hit_rate)}`);
      if (traits.refit === true) notes.push("traits refitted");
      if (traits.refit === false) notes.push("traits kept");
      if (m.drift && m.drift.weighted_mean_drift !== undefined) {
        notes.push(`drift ${fmtNum(m.drift.weighted_mean_drift)}`);
      }
      // An increment's refit is judged on this one, against its increment_threshold.
      if (m.drift && typeof m.drift.recent_weighted_drift === "number") {
        const threshold = typeof m.drift.increment_threshold === "number" ? ` (refit above ${fmtNum(m.drift.increment_threshold)})` : "";
        notes.push(`recent-weighted drift ${fmtNum(m.drift.recent_weighted_drift)}${threshold}`);
      }
      if (m.trait_match && Array.isArray(m.trait_match.new) && m.trait_match.new.length) {
        notes.push(`${m.trait_match.new.length} new trait(s)`);
      }
      if (m.status_reason) notes.push(m.status_reason);
      row.appendChild(td(notes.join(" · "), "tags"));
      tbody.appendChild(row);
    }
  } catch (e) {
    $("model-summary").textContent = "";
    showError(e.message);
  }
}

// A model's lineage: "full", "incremental from v3", or "–" when it was not recorded.
function fmtTraining(mode, parent) {
  if (!mode) return "–";
  return mode === "incremental" ? `incremental from v${parent}` : mode;
}

async function loadModelQuality() {
  try {
    const data = await api("api/charts/model-quality");
    TraitflowCharts.quality(data.models);
    TraitflowCharts.drift(data.models);
  } catch (e) {
    showError(e.message);
  }
}

// ------------------------------------------------------------------------------------ reports

const SUMMARY_KEYS = [
  "model_version", "n_profiles", "oov_rate", "cold_start_share", "profile_shift_js", "promoted", "reason",
];

function summarize(report) {
  const parts = [];
  for (const key of SUMMARY_KEYS) {
    if (report[key] === undefined || report[key] === null) continue;
    const value = typeof report[key] === "number" && !Number.isInteger(report[key])
      ? fmtNum(report[key]) : String(report[key]);
    parts.push(`${key}: ${value}`);
  }
  return parts.join(" · ");
}

// The weekly run's branch tasks, in DAG order; each stored decision is {branch, reason, ...}.
const WEEKLY_DECISIONS = ["check_new_vocab", "quality_gate", "check_drift"];

function weeklyOutcome(report) {
  if (report.promote && report.promote.model_version !== undefined) return `promoted model ${report.promote.model_version}`;
  if (report.reject_candidate) return "candidate rejected";
  if (report.skip_retrain) return "no retrain";
  return "incomplete";
}

// A weekly report's summary: its outcome and each decision with its reason.
function weeklySummary(report) {
  const cell = td(null, "tags");
  cell.appendChild(el("strong", weeklyOutcome(report)));
  const list = el("ul", null, "decisions");
  for (const step of WEEKLY_DECISIONS) {
    const decision = report[step];
    if (!decision || !decision.branch) continue;
    const item = el("li");
    item.appendChild(el("span", `${step} → ${decision.branch}`, "decision"));
    if (decision.reason) item.appendChild(el("span", `: ${decision.reason}`));
    list.appendChild(item);
    // How the candidate was trained, right after the decision to train one.
    const training = step === "check_new_vocab" && report.train_candidate && report.train_candidate.training;
    if (training) {
      const how = el("li");
      how.appendChild(el("span", `train_candidate → ${fmtTraining(training.mode, training.parent_version)}`, "decision"));
      how.appendChild(el("span", `: ${training.reason}`));
      list.appendChild(how);
    }
  }
  cell.appendChild(list);
  return cell;
}

function jsonCell(report) {
  const cell = td();
  const details = el("details");
  details.appendChild(el("summary", "JSON"));
  details.appendChild(el("pre", JSON.stringify(report, null, 2)));
  cell.appendChild(details);
  return cell;
}

function reportRow(r) {
  const row = el("tr");
  row.dataset.kind = r.kind;
  row.appendChild(td(r.kind));
  row.appendChild(td(r.run_key));
  row.appendChild(td(fmtDate(r.updated_at)));
  row.appendChild(r.kind === "weekly" ? weeklySummary(r.report) : td(summarize(r.report), "tags"));
  row.appendChild(jsonCell(r.report));
  return row;
}

const isIdleDaily = (r) => r.kind === "daily" && r.report.n_profiles === 0;

// Daily runs that wrote no profile, folded into one line (where the newest of them is).
function idleDailyRow(idle) {
  const row = el("tr", null, "folded");
  row.appendChild(td("daily"));
  const cell = td(null, "tags");
  cell.colSpan = 4;
  const details = el("details");
  const runs = `${idle.length} daily run${idle.length === 1 ? "" : "s"} with nothing to do`;
  details.appendChild(el("summary", `${runs} (${idle[idle.length - 1].run_key} … ${idle[0].run_key})`));
  const list = el("ul");
  for (const r of idle) list.appendChild(el("li", `${r.run_key}${r.report.reason ? `: ${r.report.reason}` : ""}`));
  details.appendChild(list);
  cell.appendChild(details);
  row.appendChild(cell);
  return row;
}

async function loadReports() {
  const tbody = $("reports").querySelector("tbody");
  tbody.replaceChildren();
  try {
    const data = await api("api/reports?limit=50");
    if (!data.reports.length) {
      const row = el("tr");
      const cell = td("No run reports yet.", "muted");
      cell.colSpan = 5;
      row.appendChild(cell);
      tbody.appendChild(row);
    }
    const idle = data.reports.filter(isIdleDaily);
    for (const r of data.reports) {
      if (!isIdleDaily(r)) tbody.appendChild(reportRow(r));
      else if (r === idle[0]) tbody.appendChild(idleDailyRow(idle));
    }
  } catch (e) {
    showError(e.message);
  }
}

// --------------------------------------------------------------------------------------- boot

document.addEventListener("DOMContentLoaded", () => {
  $("lookup").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("customer-id").value.trim();
    if (value) lookup(value);
  });
  $("products-new-only").addEventListener("change", () => {
    if (productsShown.customer !== null) loadProducts(productsShown.customer);
  });
  loadModels();
  loadModelQuality();
  loadTraits();
  loadSizeHistory();
  loadMap();
  loadReports();
  const initial = new URL(window.location.href).searchParams.get("customer");
  if (initial) {
    $("customer-id").value = initial;
    lookup(initial);
  }
});
