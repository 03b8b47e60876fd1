/* The alerts page: one box ticks or clears every open alert's box on the page (the page works without it). */
(function () {
  "use strict";
  document.querySelectorAll("[data-select-all]").forEach(function (all) {
    var boxes = function () {
      return document.querySelectorAll("input[type=checkbox][name='" + all.getAttribute("data-select-all") + "']");
    };
    all.addEventListener("change", function () {
      boxes().forEach(function (box) { box.checked = all.checked; });
    });
  });
}());
