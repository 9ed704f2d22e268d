// Recharge page: amount presets fill the amount field and refresh the bonus preview.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var preset = event.target.closest(".preset[data-amount]");
    if (!preset) return;
    var input = document.querySelector("input[name=amount]");
    input.value = preset.getAttribute("data-amount");
    document.querySelectorAll(".preset").forEach(function (button) {
      button.setAttribute("aria-pressed", button === preset ? "true" : "false");
    });
    if (window.htmx) window.htmx.trigger(input, "preset-chosen");
    input.focus();
  });
})();
