// Support: the ticket form shows the questions of the chosen category.
(function () {
  "use strict";

  function showCategory() {
    var chosen = document.querySelector("input[name=category]:checked");
    document.querySelectorAll(".category-part").forEach(function (part) {
      part.hidden = !chosen || part.getAttribute("data-category") !== chosen.value;
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches("input[name=category]")) showCategory();
  });
  document.addEventListener("DOMContentLoaded", showCategory);
})();
