// Dashboard charts (Chart.js, vendored) drawn from json_script data, and the live refresh.
(function () {
  "use strict";

  var charts = {};
  var PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444"];
  // One colour per model in the spend chart, none alike (Tableau 10, less its red, which
  // means errors here, and its grey, which is "Other"): as many as the series the server
  // sends at most (logs.stats.MAX_SERIES).
  var SERIES = ["#4e79a7", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                "#9c755f"];
  var OTHER = "#9ca3af";

  function seriesColour(entry, i) {
    if (entry.other) return OTHER;
    if (i < SERIES.length) return SERIES[i];
    // More series than colours: spread further hues around the wheel, never one twice.
    return "hsl(" + Math.round((i * 137.508) % 360) + ", 55%, 50%)";
  }

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function data(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function baseOptions() {
    var text = css("--text-3"), grid = css("--border");
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { labels: { color: text, boxWidth: 12 } } },
      scales: {
        x: { ticks: { color: text, maxTicksLimit: 12, autoSkip: true }, grid: { color: grid } },
        y: { ticks: { color: text }, grid: { color: grid }, beginAtZero: true }
      }
    };
  }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas || !window.Chart) return;
    if (charts[id]) charts[id].destroy();
    charts[id] = new window.Chart(canvas, config);
  }

  function drawRpm(series) {
    if (!series) return;
    var options = baseOptions();
    options.scales.y2 = { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                          ticks: { color: css("--text-3") } };
    draw("rpm-chart", {
      type: "line",
      data: {
        labels: series.labels,
        datasets: [
          { label: "Requests / min", data: series.requests, borderColor: PALETTE[0],
            backgroundColor: PALETTE[0] + "33", fill: true, pointRadius: 0, tension: 0.2 },
          { label: "Tokens / min", data: series.tokens, borderColor: PALETTE[1], yAxisID: "y2",
            pointRadius: 0, tension: 0.2 },
          { label: "Errors / min", data: series.errors, borderColor: PALETTE[4], pointRadius: 0,
            tension: 0.2 }
        ]
      },
      options: options
    });
  }

  function drawSpend() {
    var spend = data("spend-data");
    if (!spend) return;
    var options = baseOptions();
    options.scales.x.stacked = true;
    options.scales.y.stacked = true;
    // Cents for real spend; more digits when the whole chart is under a cent.
    options.scales.y.ticks.callback = function (value, index, ticks) {
      var top = ticks.length ? Math.abs(ticks[ticks.length - 1].value) : value;
      return "$" + (value / 1e6).toFixed(top >= 10000 ? 2 : 6);
    };
    options.plugins.tooltip = { callbacks: { label: function (item) {
      return item.dataset.label + ": $" + (item.raw / 1e6).toFixed(4);
    } } };
    draw("spend-chart", {
      type: "bar",
      data: {
        labels: spend.labels,
        datasets: spend.models.map(function (entry, i) {
          return { label: entry.model, data: entry.cost, backgroundColor: seriesColour(entry, i) };
        })
      },
      options: options
    });
  }

  function refresh() {
    var live = document.getElementById("live");
    if (!live || document.hidden || !window.htmx) return;
    window.htmx.ajax("GET", live.getAttribute("data-live-url"), { target: "#live", swap: "outerHTML" });
  }

  // htmx drops script elements from swapped HTML (allowScriptTags is off), json_script's
  // included, so a refresh's figures are read from the response before the swap.
  var refreshed = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.target.id !== "live") return;
    var response = new DOMParser().parseFromString(event.detail.serverResponse, "text/html");
    var node = response.getElementById("rpm-data");
    refreshed = node ? JSON.parse(node.textContent) : null;
  });

  document.addEventListener("DOMContentLoaded", function () {
    drawRpm(data("rpm-data"));
    drawSpend();
    setInterval(refresh, 15000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target.id === "live") drawRpm(refreshed);
  });
})();
