// Draws the metrics page's charts from the JSON the page carries (Chart.js, served from node_modules).
(function () {
  "use strict";
  const source = document.getElementById("metrics-data");
  if (!source || typeof Chart === "undefined") return;
  const groups = JSON.parse(source.textContent);
  const labels = groups.map((g) => g.key);
  const days = (hours) => (hours === null ? null : Math.round((hours / 24) * 10) / 10);
  const common = { responsive: true, maintainAspectRatio: false, animation: false };

  function bar(id, datasets, options) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    new Chart(canvas, { type: "bar", data: { labels: labels, datasets: datasets }, options: Object.assign({}, common, options || {}) });
  }

  bar("chart-v2v", [
    { label: "median", data: groups.map((g) => days(g.vein_to_vein_hours.p50)), backgroundColor: "#2f6f9f" },
    { label: "90th percentile", data: groups.map((g) => days(g.vein_to_vein_hours.p90)), backgroundColor: "#9cc3de" },
  ], { scales: { y: { beginAtZero: true, title: { display: true, text: "days" } } } });
  bar("chart-counts", [
    { label: "started", data: groups.map((g) => g.started), backgroundColor: "#5b6b7a" },
    { label: "completed", data: groups.map((g) => g.completed), backgroundColor: "#2e8b57" },
    { label: "cancelled", data: groups.map((g) => g.cancelled), backgroundColor: "#b5483b" },
  ], { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } });
  bar("chart-on-time", [
    { label: "on time", data: groups.map((g) => (g.on_time_rate === null ? null : Math.round(g.on_time_rate * 100))), backgroundColor: "#2e8b57" },
  ], { scales: { y: { min: 0, max: 100, title: { display: true, text: "%" } } } });
  bar("chart-events", [
    { label: "excursions", data: groups.map((g) => g.excursions), backgroundColor: "#d08c1f" },
    { label: "escalations", data: groups.map((g) => g.escalations), backgroundColor: "#b5483b" },
    { label: "COI mismatches", data: groups.map((g) => g.coi_mismatches), backgroundColor: "#6a3d9a" },
  ], { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } });
})();
