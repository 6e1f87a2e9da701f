// The dashboard: polls the coordinator's JSON API and redraws the page without reloading it.
// Every value from the API is inserted with textContent, never as HTML.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const MESSAGES = window.CF_MESSAGES;
  const state = { lang: "en", data: {}, errors: [] };

  // -- language -------------------------------------------------------------------------------

  function t(key, params) {
    const table = MESSAGES[state.lang] || MESSAGES.en;
    let text = key in table ? table[key] : (MESSAGES.en[key] || key);
    for (const [name, value] of Object.entries(params || {})) {
      text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }

  function chooseLanguage() {
    const stored = window.localStorage ? localStorage.getItem("cf-lang") : null;
    const fromServer = document.documentElement.lang;
    if (stored === "en" || stored === "ja") return stored;
    return fromServer === "ja" ? "ja" : "en";
  }

  function applyLanguage(lang) {
    state.lang = lang;
    document.documentElement.lang = lang;
    for (const element of document.querySelectorAll("[data-i18n]")) {
      element.textContent = t(element.dataset.i18n);
    }
    for (const element of document.querySelectorAll("[data-i18n-placeholder]")) {
      element.placeholder = t(element.dataset.i18nPlaceholder);
    }
    for (const button of document.querySelectorAll(".lang-switch button")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
    }
    document.title = t("title");
    render();
  }

  // -- small helpers -------------------------------------------------------------------------

  const byId = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function row(cells, className) {
    const tr = element("tr", null, className);
    for (const cell of cells) {
      tr.appendChild(cell instanceof Node ? wrap("td", cell) : element("td", cell));
    }
    return tr;
  }

  function wrap(tag, child) {
    const node = document.createElement(tag);
    node.appendChild(child);
    return node;
  }

  function emptyRow(tbody, columns, text) {
    const td = element("td", text, "muted");
    td.colSpan = columns;
    tbody.appendChild(wrap("tr", td));
  }

  function formatTime(ms) {
    if (!ms) return "–";
    return new Date(Number(ms)).toLocaleString(state.lang === "ja" ? "ja-JP" : "en-GB");
  }

  function formatNumber(value) {
    if (value === null || value === undefined) return "–";
    return Number(value).toLocaleString(state.lang === "ja" ? "ja-JP" : "en-US");
  }

  function statusLabel(status) {
    const key = "status." + status;
    return key in MESSAGES.en ? t(key) : status;
  }

  function statusClass(status) {
    if (status === "enabled") return "status-enabled";
    if (!status || status === "unbound") return "status-pending";
    return "status-disabled";
  }

  function alertMessage(alert) {
    return state.lang === "ja" && alert.message_ja ? alert.message_ja : alert.message;
  }

  // -- fetching ------------------------------------------------------------------------------

  const ENDPOINTS = {
    health: "/healthz", stats: "/api/stats", shards: "/api/shards", workers: "/api/workers",
    subscriptions: "/api/subscriptions", alerts: "/api/alerts", history: "/api/history", migration: "/api/migration",
  };

  async function fetchJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await response.json();
    return { ok: response.ok, status: response.status, body };
  }

  async function refresh() {
    const names = Object.keys(ENDPOINTS);
    const results = await Promise.allSettled(names.map((name) => fetchJson(ENDPOINTS[name])));
    state.errors = [];
    results.forEach((result, index) => {
      const name = names[index];
      if (result.status === "fulfilled" && (result.value.ok || name === "stats")) {
        state.data[name] = result.value;
      } else {
        state.errors.push(name + ": " + (result.reason ? result.reason.message : "HTTP " + result.value.status));
      }
    });
    state.updatedAt = Date.now();
    render();
  }

  // -- rendering -----------------------------------------------------------------------------

  function render() {
    renderBanner();
    renderConduit();
    renderShards();
    renderCharts();
    renderAlerts();
    renderWorkers();
    renderSubscriptions();
    renderMigration();
    byId("updated").textContent = state.updatedAt ? t("updated", { time: formatTime(state.updatedAt) }) : "";
  }

  function renderBanner() {
    const banner = byId("error-banner");
    const stats = state.data.stats;
    let text = "";
    if (state.errors.length) text = t("error.fetch", { detail: state.errors.join(", ") });
    else if (stats && !stats.ok) text = t("error.noStats");
    banner.textContent = text;
    banner.hidden = !text;
  }

  function statsBody() {
    const stats = state.data.stats;
    return stats && stats.ok ? stats.body : null;
  }

  function renderConduit() {
    const stats = statsBody();
    const health = state.data.health ? state.data.health.body : null;
    byId("conduit-id").textContent = stats ? stats.conduit_id || "–" : "–";
    byId("conduit-shards").textContent = stats ? formatNumber(stats.total_shards) : "–";
    byId("conduit-subscriptions").textContent = stats ? formatNumber(stats.total_subscriptions) : "–";
    byId("conduit-cost").textContent = stats ? formatNumber(stats.total_cost) + " / " + formatNumber(stats.max_total_cost) : "–";
    if (health) {
      byId("conduit-leader").textContent = health.leader
        ? t("conduit.leaderYes", { id: health.coordinator, epoch: health.epoch })
        : t("conduit.leaderNo", { id: health.coordinator });
    }
    const usage = stats ? Number(stats.usage_percentage) : null;
    const fill = byId("gauge-fill");
    fill.style.width = usage === null ? "0" : Math.min(100, usage) + "%";
    fill.className = "gauge-fill " + (usage >= 90 ? "level-critical" : usage >= 80 ? "level-warning" : "level-ok");
    byId("gauge").setAttribute("aria-valuenow", usage === null ? "0" : String(usage));
    byId("usage-value").textContent = usage === null ? "–" : usage.toFixed(2) + " %";
    byId("stat-enabled").textContent = stats ? formatNumber(stats.enabled_shards) : "–";
    byId("stat-disabled").textContent = stats ? formatNumber(stats.disabled_shards) : "–";
    byId("stat-total").textContent = stats ? formatNumber(stats.total_shards) : "–";
  }

  function shardRows() {
    const shards = state.data.shards;
    return shards ? shards.body.data : [];
  }

  function renderShards() {
    const rows = shardRows();
    const grid = byId("shard-grid");
    grid.replaceChildren();
    for (const shard of rows) {
      const cell = element("span", null, "cell " + statusClass(shard.status));
      cell.title = shard.id + " · " + statusLabel(shard.status) + (shard.worker ? " · " + shard.worker : "");
      grid.appendChild(cell);
    }
    updateStatusOptions(rows);
    const filter = byId("shard-filter").value.trim().toLowerCase();
    const wanted = byId("shard-status").value;
    const tbody = byId("shard-rows");
    tbody.replaceChildren();
    let shown = 0;
    for (const shard of rows) {
      const haystack = [shard.id, shard.worker, shard.session_id].join(" ").toLowerCase();
      if ((filter && !haystack.includes(filter)) || (wanted && shard.status !== wanted)) continue;
      shown += 1;
      const status = element("span", statusLabel(shard.status), "badge " + statusClass(shard.status));
      tbody.appendChild(row([shard.id, shard.worker || "–", shard.session_id || "–", status,
        formatTime(shard.changed_at_ms || shard.bound_at_ms)]));
    }
    if (!shown) emptyRow(tbody, 5, t("shardTable.none"));
    byId("shard-shown").textContent = t("shardTable.shown", { shown, total: rows.length });
  }

  function updateStatusOptions(rows) {
    const select = byId("shard-status");
    const statuses = Array.from(new Set(rows.map((shard) => shard.status))).sort();
    const current = select.value;
    const options = [element("option", t("filter.all"))];
    options[0].value = "";
    for (const status of statuses) {
      const option = element("option", statusLabel(status));
      option.value = status;
      options.push(option);
    }
    select.replaceChildren(...options);
    select.value = statuses.includes(current) ? current : "";
  }

  function drawChart(svg, values) {
    svg.replaceChildren();
    const points = values.filter((value) => value !== null && value !== undefined);
    if (points.length < 2) return;
    const max = Math.max(1, ...points);
    const width = 300, height = 80, step = width / (values.length - 1);
    const coords = [];
    values.forEach((value, index) => {
      if (value === null || value === undefined) return;
      coords.push((index * step).toFixed(1) + "," + (height - 4 - (value / max) * (height - 12)).toFixed(1));
    });
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("class", "chart-line");
    svg.appendChild(line);
    const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
    label.setAttribute("x", "2");
    label.setAttribute("y", "10");
    label.setAttribute("class", "chart-label");
    label.textContent = "max " + formatNumber(Math.round(max * 100) / 100);
    svg.appendChild(label);
  }

  function renderCharts() {
    const history = state.data.history ? state.data.history.body.samples : [];
    const rates = history.map((sample) => sample.events_per_s);
    const lengths = history.map((sample) => sample.stream_length);
    drawChart(byId("chart-rate"), rates);
    drawChart(byId("chart-length"), lengths);
    byId("chart-empty").hidden = history.length >= 2;
    const last = history[history.length - 1];
    byId("rate-now").textContent = last && last.events_per_s !== null ? t("charts.now", { value: formatNumber(last.events_per_s) }) : "";
    byId("length-now").textContent = last ? t("charts.now", { value: formatNumber(last.stream_length) }) : "";
  }

  function renderAlerts() {
    const alerts = state.data.alerts ? state.data.alerts.body : { active: [], recent: [] };
    const list = byId("alerts-active");
    list.replaceChildren();
    for (const alert of alerts.active) {
      const item = element("li", null, "alert severity-" + alert.severity);
      item.appendChild(element("span", t("severity." + alert.severity), "badge severity-" + alert.severity));
      item.appendChild(element("strong", " " + alert.name + " "));
      item.appendChild(element("span", alertMessage(alert)));
      item.appendChild(element("span", " " + t("alerts.since", { time: formatTime(alert.fired_at_ms) }), "muted"));
      list.appendChild(item);
    }
    if (!alerts.active.length) list.appendChild(element("li", t("alerts.none"), "muted"));
    const tbody = byId("alerts-recent");
    tbody.replaceChildren();
    for (const entry of alerts.recent.slice(0, 20)) {
      const when = entry.resolved_at_ms || entry.fired_at_ms;
      const stateBadge = element("span", t("state." + entry.state), "badge state-" + entry.state);
      tbody.appendChild(row([formatTime(when), stateBadge, entry.name, alertMessage(entry) || "–"]));
    }
    if (!alerts.recent.length) emptyRow(tbody, 4, t("alerts.noneRecent"));
  }

  function renderWorkers() {
    const workers = state.data.workers ? state.data.workers.body.data : [];
    const tbody = byId("worker-rows");
    tbody.replaceChildren();
    for (const worker of workers) {
      const age = worker.heartbeat_age_s === null ? "–" : t("workers.seconds", { value: worker.heartbeat_age_s });
      const mode = worker.draining ? t("workers.draining") : t("workers.running");
      tbody.appendChild(row([worker.id, formatNumber(worker.shards), age, mode, formatNumber(worker.published),
        formatNumber(worker.duplicates)]));
    }
    if (!workers.length) emptyRow(tbody, 6, t("workers.none"));
  }

  function countsInto(tbody, counts, labelOf) {
    tbody.replaceChildren();
    const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
    for (const [name, count] of entries) tbody.appendChild(row([labelOf(name), formatNumber(count)]));
    if (!entries.length) emptyRow(tbody, 2, t("subs.none"));
  }

  function problemsInto(tbody, problems) {
    tbody.replaceChildren();
    for (const problem of problems || []) {
      tbody.appendChild(row([problem.type + ":" + problem.version, JSON.stringify(problem.condition), problem.reason]));
    }
    if (!(problems || []).length) emptyRow(tbody, 3, t("subs.none"));
  }

  function renderSubscriptions() {
    const subs = state.data.subscriptions ? state.data.subscriptions.body : {};
    countsInto(byId("subs-status"), subs.by_status, statusLabel);
    countsInto(byId("subs-type"), subs.by_type, (name) => name);
    problemsInto(byId("subs-failed"), subs.failed);
    problemsInto(byId("subs-reconsent"), subs.needs_reconsent);
    byId("subs-failed-total").textContent = subs.failed_total ? t("subs.total", { value: subs.failed_total }) : "";
    byId("subs-reconsent-total").textContent = subs.needs_reconsent_total ? t("subs.total", { value: subs.needs_reconsent_total }) : "";
  }

  // A translated label for an API value, or the value itself when no translation exists.
  function label(prefix, value) {
    const key = prefix + value;
    return key in MESSAGES.en ? t(key) : String(value);
  }

  function renderMigration() {
    const report = state.data.migration ? state.data.migration.body : null;
    if (!report || !report.channels) return;  // no response yet: the banner names the failed request
    const status = byId("migration-status");
    status.textContent = label("migration.status.", report.status);
    status.className = "badge migration-" + report.status;
    byId("migration-paused").textContent = inLanguage(report.paused_reason, report.paused_reason_ja);
    let phase = report.phase
      ? t("migration.phaseValue", { phase: report.phase, count: report.phases.length, target: report.phase_target_percent })
      : t("migration.phaseNone");
    if (report.stop_after_phase) phase += t("migration.stopAfter", { phase: report.stop_after_phase });
    byId("migration-phase").textContent = phase;
    byId("migration-step").textContent = label("migration.step.", report.step);
    byId("migration-batch").textContent = batchText(report.batch);
    byId("migration-rollback").textContent = rollbackText(report.rollback);
    byId("migration-fallback").textContent = fallbackText(report.fallback);
    renderModes(report);
    renderLegacy(report.legacy);
    renderComparison(report.comparison);
  }

  function batchText(batch) {
    if (!batch.number) return t("migration.batchNone");
    let text = t("migration.batchValue", { number: batch.number, channels: formatNumber(batch.channels),
      time: formatTime(batch.started_at_ms) });
    if (batch.soak_started_at_ms) {
      text += t("migration.soakValue", { time: formatTime(batch.soak_started_at_ms), seconds: formatNumber(batch.soak_seconds) });
    }
    return text;
  }

  function rollbackText(rollback) {
    if (!rollback || !rollback.at_ms) return t("migration.rollbackNone");
    // A manual rollback before the first batch has no phase or batch to name.
    return t(rollback.batch ? "migration.rollbackValue" : "migration.rollbackNoBatch", {
      time: formatTime(rollback.at_ms), kind: t(rollback.automatic ? "migration.automatic" : "migration.manual"),
      phase: rollback.phase, batch: rollback.batch, channels: formatNumber(rollback.channels),
      reason: inLanguage(rollback.reason, rollback.reason_ja),
    });
  }

  // The controller writes its reasons in both languages, but records from older versions have English only.
  function inLanguage(english, japanese) {
    return (state.lang === "ja" && japanese) || english || "";
  }

  function fallbackText(fallback) {
    const current = (fallback || {}).state || "idle";
    if (current === "active") {
      return t("migration.fallbackActive", { time: formatTime(fallback.since_ms), channels: formatNumber(fallback.channels),
        left: formatNumber(fallback.left_on_conduit) });
    }
    if (current === "returning") {
      return t("migration.fallbackReturning", { channels: formatNumber((fallback.returning || []).length) });
    }
    let text = t("migration.fallbackIdle");
    if (fallback && fallback.down_since_ms) text += t("migration.apiDown", { time: formatTime(fallback.down_since_ms) });
    return text;
  }

  function renderModes(report) {
    const counts = report.channels;
    for (const mode of ["websocket", "both", "conduit", "fallback"]) {
      byId("mode-" + mode).textContent = formatNumber(counts[mode] || 0);
    }
    const percent = Number(report.conduit_percent) || 0;
    byId("conduit-share-fill").style.width = Math.min(100, percent) + "%";
    byId("conduit-share-gauge").setAttribute("aria-valuenow", String(percent));
    byId("conduit-share").textContent = t("migration.share", { percent: formatNumber(percent), total: formatNumber(counts.total) });
  }

  function renderLegacy(legacy) {
    byId("legacy-used").textContent = t("legacy.used", { used: formatNumber(legacy.used), capacity: formatNumber(legacy.capacity) });
    const connections = {};
    for (const connection of legacy.connections || []) connections[connection.slot] = connection;
    const tbody = byId("legacy-rows");
    tbody.replaceChildren();
    const slots = Object.keys(legacy.load).map(Number).sort((a, b) => a - b);
    for (const slot of slots) {
      const placed = formatNumber(legacy.load[slot]) + " / " + formatNumber(legacy.per_connection);
      const connection = connections[slot];
      if (!connection) {
        tbody.appendChild(row(["legacy-" + slot, placed, "–", t("legacy.notReported"), "–", "–", "–"]));
        continue;
      }
      const badge = element("span", label("legacy.state.", connection.state), "badge " + legacyStateClass(connection.state));
      tbody.appendChild(row([connection.name || "legacy-" + slot, placed, formatNumber(connection.subscriptions), badge,
        connection.worker_id || "–", formatNumber(connection.disconnects), connection.last_error || "–"]));
    }
  }

  function legacyStateClass(value) {
    if (value === "bound") return "status-enabled";
    if (value === "connecting" || value === "binding") return "status-pending";
    return "status-disabled";
  }

  function renderComparison(comparison) {
    const section = comparison.current_batch || comparison.all_time;
    byId("compare-scope").textContent = comparison.current_batch
      ? t("compare.batch", { compared: formatNumber(section.compared) })
      : t("compare.allTime", { compared: formatNumber(section.compared) });
    const tbody = byId("compare-rows");
    tbody.replaceChildren();
    for (const [transport, figures] of Object.entries(section.transports)) {
      const mean = figures.mean_latency_ms === null ? "–" : t("compare.ms", { value: formatNumber(figures.mean_latency_ms) });
      const p95 = figures.p95_latency_ms ? t("compare.ms", { value: formatNumber(figures.p95_latency_ms) }) : "–";
      tbody.appendChild(row([label("mode.", transport), formatNumber(figures.seen), formatNumber(figures.missed),
        (100 * figures.loss_ratio).toFixed(1) + " %", mean, p95, formatNumber(figures.disconnects_last_hour),
        formatNumber(figures.helix_failure_streak)]));
    }
  }

  // -- start ---------------------------------------------------------------------------------

  function start() {
    for (const button of document.querySelectorAll(".lang-switch button")) {
      button.addEventListener("click", () => {
        if (window.localStorage) localStorage.setItem("cf-lang", button.dataset.lang);
        applyLanguage(button.dataset.lang);
      });
    }
    byId("shard-filter").addEventListener("input", renderShards);
    byId("shard-status").addEventListener("change", renderShards);
    applyLanguage(chooseLanguage());
    refresh();
    setInterval(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
