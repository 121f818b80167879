// Traitflow "Traits" page: the charts, drawn with the vendored Chart.js (static/vendor/chart.js,
// see plugins/README.md). Each function takes an API response and (re)draws one canvas; app.js
// fetches the data. No animation: a chart is complete as soon as it is drawn. A trait keeps its
// colour in every chart (chosen by its id).
"use strict";

const TraitflowCharts = (() => {
  // Tableau 10: distinguishable, and readable on light and dark backgrounds.
  const PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
  ];
  const THRESHOLD = "#e15759";
  const BASELINE = "#9c755f";
  const MAX_LABEL = 36;

  function traitColor(traitId, alpha = 1) {
    const hex = PALETTE[Math.abs(Number(traitId)) % PALETTE.length];
    if (alpha === 1) return hex;
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    return `rgba(${r}, ${g}, ${b}, ${alpha})`;
  }

  function short(text) {
    const value = String(text ?? "");
    return value.length > MAX_LABEL ? `${value.slice(0, MAX_LABEL - 1)}…` : value;
  }

  function traitName(traitId, label) {
    return label ? `${traitId} · ${short(label)}` : `trait ${traitId}`;
  }

  function day(value) {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().slice(0, 16).replace("T", " ").replace(/ 00:00$/, "");
  }

  function pct(value) {
    return value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`;
  }

  function textColor() {
    return getComputedStyle(document.body).color || "#1a202c";
  }

  function draw(canvasId, config) {
    const canvas = document.getElementById(canvasId);
    const previous = Chart.getChart(canvas);
    if (previous) previous.destroy();
    Chart.defaults.color = textColor();
    const options = { animation: false, maintainAspectRatio: false, responsive: true, ...config.options };
    return new Chart(canvas, { ...config, options });
  }

  // (a) Trait sizes of the active model, each bar labelled with its share.
  function traitSizes(traits) {
    return draw("chart-sizes", {
      type: "bar",
      data: {
        labels: traits.map((t) => `${traitName(t.trait_id, t.label)} (${pct(t.share)})`),
        datasets: [{
          label: "customers",
          data: traits.map((t) => t.size),
          backgroundColor: traits.map((t) => traitColor(t.trait_id)),
        }],
      },
      options: {
        indexAxis: "y",
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: (c) => `${c.parsed.x.toLocaleString()} customers (${pct(traits[c.dataIndex].share)})` } },
        },
        scales: { x: { beginAtZero: true, title: { display: true, text: "customers" } } },
      },
    });
  }

  // (b) Trait sizes over time, stacked: the total is the number of profiled customers.
  function sizeHistory(data) {
    return draw("chart-size-history", {
      type: "line",
      data: {
        labels: data.times.map(day),
        datasets: data.traits.map((t) => ({
          label: traitName(t.trait_id, t.label),
          data: t.sizes,
          borderColor: traitColor(t.trait_id),
          backgroundColor: traitColor(t.trait_id, 0.35),
          fill: true,
          pointRadius: data.times.length > 30 ? 0 : 2,
        })),
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { y: { stacked: true, beginAtZero: true, title: { display: true, text: "customers" } } },
      },
    });
  }

  function versionLabels(models) {
    return models.map((m) => `v${m.model_version} (${m.status})`);
  }

  // A threshold holds for one model version: a short horizontal mark on its bar, not a line
  // joining versions (each was judged by its own).
  function thresholdMarks(label, data) {
    return {
      type: "line", label, data, showLine: false, pointStyle: "line", pointRadius: 30, pointHoverRadius: 30,
      borderColor: THRESHOLD, backgroundColor: THRESHOLD, borderWidth: 3, order: 0, // drawn last: on top
    };
  }

  const POINT_LEGEND = { labels: { usePointStyle: true } };

  // (c) Held-out hit rate per model version with its baseline and the lowest rate the gate accepts.
  function quality(models) {
    const floor = models.map((m) =>
      m.baseline_hit_rate === null || m.quality_margin === null ? null : Math.max(0, m.baseline_hit_rate - m.quality_margin));
    return draw("chart-quality", {
      type: "bar",
      data: {
        labels: versionLabels(models),
        datasets: [
          {
            label: "hit@10 (held out)",
            order: 2,
            data: models.map((m) => m.hit_rate),
            backgroundColor: models.map((m) => (m.passed === false ? traitColor(2, 0.55) : traitColor(0, 0.8))),
          },
          {
            type: "line", label: "baseline hit@10", data: models.map((m) => m.baseline_hit_rate),
            borderColor: BASELINE, backgroundColor: BASELINE, showLine: false, pointRadius: 5, pointStyle: "rectRot",
            order: 1,
          },
          thresholdMarks("gate: baseline − margin", floor),
        ],
      },
      options: {
        plugins: {
          legend: POINT_LEGEND,
          tooltip: { callbacks: { afterBody: (items) => {
            const m = models[items[0].dataIndex];
            return m.baseline ? `baseline: ${m.baseline}, margin ${m.quality_margin}` : "not gated";
          } } },
        },
        scales: { y: { beginAtZero: true, title: { display: true, text: "hit@10" } } },
      },
    });
  }

  // (c) Drift of each model version from the one it replaced: the weighted mean and, for an
  // increment, the recent-weighted drift, against the refit threshold of the version's mode. The
  // figure that was compared with the threshold (refit_on) is drawn in the refit colour above it.
  function drift(models) {
    // figure: "weighted_mean_drift" (field m.drift) or "recent_weighted_drift" (same-named field).
    const value = (m, figure) => (figure === "weighted_mean_drift" ? m.drift : m[figure]);
    const colours = (figure, base) => models.map((m) =>
      (m.refit_on === figure && m.drift_threshold !== null && value(m, figure) > m.drift_threshold ? traitColor(1, 0.8) : traitColor(base, 0.8)));
    const names = { weighted_mean_drift: "weighted mean drift", recent_weighted_drift: "recent-weighted drift" };
    return draw("chart-drift", {
      type: "bar",
      data: {
        labels: versionLabels(models),
        datasets: [
          {
            label: "weighted mean drift",
            order: 2,
            data: models.map((m) => m.drift),
            backgroundColor: colours("weighted_mean_drift", 3),
          },
          {
            label: "recent-weighted drift (increments)",
            order: 2,
            data: models.map((m) => m.recent_weighted_drift),
            backgroundColor: colours("recent_weighted_drift", 4),
          },
          thresholdMarks("refit threshold (of the version's mode)", models.map((m) => m.drift_threshold)),
        ],
      },
      options: {
        plugins: { legend: POINT_LEGEND, tooltip: { callbacks: { afterBody: (items) => {
          const m = models[items[0].dataIndex];
          if (m.refit_on === null) return "not measured (no model to compare with)";
          const name = m.training_mode === "incremental" ? "increment_drift_threshold" : "drift_threshold";
          return `${names[m.refit_on]} compared with ${name} ${m.drift_threshold}`;
        } } } },
        scales: { y: { beginAtZero: true, title: { display: true, text: "drift" } } },
      },
    });
  }

  // (d) A customer's trait scores over time, stacked (each profile sums to 1). A trait the
  // profile's model did not have counts 0 there.
  function profile(history) {
    const names = new Map();
    for (const entry of history) {
      for (const t of entry.traits) names.set(t.trait_id, t.label ?? names.get(t.trait_id));
    }
    const ids = [...names.keys()].sort((a, b) => a - b);
    return draw("chart-profile", {
      type: "line",
      data: {
        labels: history.map((h) => `${day(h.as_of)} (v${h.model_version})`),
        datasets: ids.map((id) => ({
          label: traitName(id, names.get(id)),
          data: history.map((h) => h.traits.find((t) => t.trait_id === id)?.score ?? 0),
          borderColor: traitColor(id),
          backgroundColor: traitColor(id, 0.45),
          fill: true,
          pointRadius: 2,
        })),
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { y: { stacked: true, min: 0, max: 1, title: { display: true, text: "score" } } },
      },
    });
  }

  // (e) The trait map: one dataset per dominant trait, and where each pure trait lands.
  function traitMap(data, onPick) {
    const byTrait = new Map(data.traits.map((t) => [t.trait_id, []]));
    for (const p of data.points) {
      if (!byTrait.has(p.dominant_trait_id)) byTrait.set(p.dominant_trait_id, []);
      byTrait.get(p.dominant_trait_id).push(p);
    }
    const labels = new Map(data.traits.map((t) => [t.trait_id, t.label]));
    const datasets = [...byTrait.entries()].map(([id, points]) => ({
      label: traitName(id, labels.get(id)),
      data: points,
      backgroundColor: traitColor(id, 0.7),
      borderColor: traitColor(id),
      pointRadius: 3,
    }));
    datasets.push({
      label: "pure trait",
      data: data.traits.map((t) => ({ x: t.x, y: t.y, trait_id: t.trait_id, label: t.label })),
      backgroundColor: data.traits.map((t) => traitColor(t.trait_id)),
      borderColor: textColor(),
      pointStyle: "triangle",
      pointRadius: 8,
    });
    const [ex, ey] = data.explained.map(pct);
    return draw("chart-map", {
      type: "scatter",
      data: { datasets },
      options: {
        parsing: { xAxisKey: "x", yAxisKey: "y" },
        plugins: { legend: POINT_LEGEND, tooltip: { callbacks: { label: (c) => {
          const raw = c.raw;
          return raw.customer_id !== undefined ? `${raw.customer_id} · ${c.dataset.label}` : `pure ${traitName(raw.trait_id, raw.label)}`;
        } } } },
        scales: {
          x: { title: { display: true, text: `component 1 (${ex} of the variance)` } },
          y: { title: { display: true, text: `component 2 (${ey} of the variance)` } },
        },
        onClick: (event, elements, chart) => {
          const hit = elements.map((e) => chart.data.datasets[e.datasetIndex].data[e.index]).find((p) => p.customer_id);
          if (hit) onPick(hit.customer_id);
        },
      },
    });
  }

  return { traitSizes, sizeHistory, quality, drift, profile, traitMap };
})();
