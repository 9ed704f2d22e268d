// The colour theme: auto (as the system), light or dark, remembered in this browser. Loaded in
// <head> without defer, so that the page is painted in its theme from the start. The choice is
// kept where Django's admin keeps its own ("theme" in localStorage, data-theme on <html>), so
// the console and the staff admin share it.
(function () {
  "use strict";

  var KEY = "theme";
  var CHOICES = ["auto", "light", "dark"];
  var root = document.documentElement;

  function saved() {
    try {
      var value = window.localStorage.getItem(KEY);
      return CHOICES.indexOf(value) >= 0 ? value : "auto";
    } catch (e) { // storage refused (privacy settings): the system decides
      return "auto";
    }
  }

  function apply(choice) {
    root.setAttribute("data-theme", choice);
  }

  apply(saved());

  function css(name) {
    return getComputedStyle(root).getPropertyValue(name).trim();
  }

  // Charts take their colours from the stylesheet when drawn: give them the new ones.
  function recolourCharts() {
    if (!window.Chart || !window.Chart.instances) return;
    var text = css("--text-3"), grid = css("--border");
    Object.keys(window.Chart.instances).forEach(function (id) {
      var chart = window.Chart.instances[id];
      var scales = chart.options.scales || {};
      Object.keys(scales).forEach(function (axis) {
        if (scales[axis].ticks) scales[axis].ticks.color = text;
        if (scales[axis].grid) scales[axis].grid.color = grid;
      });
      var legend = chart.options.plugins && chart.options.plugins.legend;
      if (legend && legend.labels) legend.labels.color = text;
      chart.update("none");
    });
  }

  function showChoice(choice) {
    document.querySelectorAll("[data-theme-choice]").forEach(function (button) {
      button.setAttribute("aria-checked", button.getAttribute("data-theme-choice") === choice ? "true" : "false");
    });
    var label = document.querySelector("[data-theme-label]");
    if (label) label.textContent = "Theme: " + choice;
  }

  function choose(choice) {
    try { window.localStorage.setItem(KEY, choice); } catch (e) { /* kept for this page only */ }
    apply(choice);
    showChoice(choice);
    recolourCharts();
  }

  document.addEventListener("DOMContentLoaded", function () {
    showChoice(saved());
    document.addEventListener("click", function (event) {
      var button = event.target.closest("[data-theme-choice]");
      if (!button) return;
      choose(button.getAttribute("data-theme-choice"));
      var menu = button.closest("details");
      if (menu) menu.removeAttribute("open");
    });
  });

  // Another tab chose, or the system changed while on auto.
  window.addEventListener("storage", function (event) {
    if (event.key !== KEY) return;
    apply(saved());
    showChoice(saved());
    recolourCharts();
  });
  if (window.matchMedia) {
    var media = window.matchMedia("(prefers-color-scheme: dark)");
    var changed = function () { if (saved() === "auto") recolourCharts(); };
    if (media.addEventListener) media.addEventListener("change", changed);
  }
})();
