// Small behaviours of the console. No inline scripts anywhere: the page's CSP forbids them.
(function () {
  "use strict";

  // Copy buttons: <button class="copy" data-copy="#element-id"> or data-copy-text="…".
  function copyText(button) {
    var text = button.getAttribute("data-copy-text");
    if (text === null) {
      var target = document.querySelector(button.getAttribute("data-copy"));
      if (!target) return;
      text = target.value !== undefined && target.tagName === "INPUT" ? target.value : target.textContent;
    }
    text = text.trim();
    var done = function () {
      var label = button.textContent;
      button.classList.add("copied");
      button.textContent = "Copied";
      setTimeout(function () {
        button.classList.remove("copied");
        button.textContent = label;
      }, 1600);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text, done); });
    } else {
      fallbackCopy(text, done);
    }
  }

  function fallbackCopy(text, done) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selectable */ }
    document.body.removeChild(area);
  }

  // Tabs: <div class="tabs" role="tablist"><button role="tab" aria-controls="panel-id">…
  function selectTab(tab) {
    var list = tab.closest("[role=tablist]");
    list.querySelectorAll("[role=tab]").forEach(function (other) {
      var selected = other === tab;
      other.setAttribute("aria-selected", selected ? "true" : "false");
      var panel = document.getElementById(other.getAttribute("aria-controls"));
      if (panel) panel.hidden = !selected;
    });
  }

  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy], [data-copy-text]");
    if (copy) {
      event.preventDefault();
      copyText(copy);
      return;
    }
    var clear = event.target.closest("[data-clear]");
    if (clear) {
      var slot = document.querySelector(clear.getAttribute("data-clear"));
      if (slot) slot.innerHTML = "";
      return;
    }
    var tab = event.target.closest("[role=tab]");
    if (tab) {
      selectTab(tab);
      return;
    }
    // Close open dropdown menus when clicking elsewhere.
    document.querySelectorAll("details.menu[open], details.nav-toggle[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details.menu[open], details.nav-toggle[open]").forEach(function (menu) {
      menu.removeAttribute("open");
      var summary = menu.querySelector("summary");
      if (summary) summary.focus();
    });
  });

  // Forms that ask before destroying something: <form data-confirm="Delete this token?">.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Elements shown or hidden by a checkbox: <input data-toggles="#id"> / data-hides="#id".
  function syncToggles(root) {
    (root || document).querySelectorAll("[data-toggles], [data-hides]").forEach(function (input) {
      var shows = input.getAttribute("data-toggles");
      var hides = input.getAttribute("data-hides");
      if (shows) document.querySelectorAll(shows).forEach(function (el) { el.hidden = !input.checked; });
      if (hides) document.querySelectorAll(hides).forEach(function (el) { el.hidden = input.checked; });
    });
  }
  // Parts shown for one choice of a list: <select data-reveal=".part" data-reveal-when="custom">.
  function syncReveals(root) {
    (root || document).querySelectorAll("select[data-reveal]").forEach(function (select) {
      var show = select.value === select.getAttribute("data-reveal-when");
      document.querySelectorAll(select.getAttribute("data-reveal")).forEach(function (el) { el.hidden = !show; });
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-toggles], [data-hides]")) syncToggles();
    if (event.target.matches("select[data-reveal]")) syncReveals();
  });
  document.addEventListener("DOMContentLoaded", function () { syncToggles(); syncReveals(); });
  document.addEventListener("htmx:afterSwap", function (event) { syncToggles(event.target); });
})();
