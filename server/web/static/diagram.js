/* Draws a version's BPMN diagram with bpmn-js (served locally) and marks completed and current steps, or the
   elements a version added, removed or changed. */
(function () {
  "use strict";

  function mark(viewer, ids, marker) {
    var registry = viewer.get("elementRegistry");
    var canvas = viewer.get("canvas");
    ids.forEach(function (id) {
      if (registry.get(id)) { canvas.addMarker(id, marker); }
    });
  }

  function showCurrent(canvas, focus) {
    canvas.zoom(0.85);
    canvas.scrollToElement(focus, { top: 150, bottom: 150, left: 300, right: 300 });
  }

  function zoomButtons(figure, canvas, focus) {
    var bar = document.createElement("div");
    bar.className = "diagram-zoom";
    var buttons = [["Zoom in", function () { canvas.zoom(canvas.zoom() * 1.25); }],
     ["Zoom out", function () { canvas.zoom(canvas.zoom() / 1.25); }],
     ["Whole process", function () { canvas.zoom("fit-viewport", "auto"); }]];
    if (focus) { buttons.push(["Current step", function () { showCurrent(canvas, focus); }]); }
    buttons.forEach(function (entry) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = entry[0];
      button.addEventListener("click", entry[1]);
      bar.appendChild(button);
    });
    figure.insertBefore(bar, figure.firstChild);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.BpmnJS) { return; }
    document.querySelectorAll("[data-diagram]").forEach(function (container) {
      var completed = JSON.parse(container.getAttribute("data-completed") || "[]");
      var current = JSON.parse(container.getAttribute("data-current") || "[]");
      var viewer = new window.BpmnJS({ container: container });
      fetch(container.getAttribute("data-xml-url"), { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (xml) { return viewer.importXML(xml); })
        .then(function () {
          var canvas = viewer.get("canvas");
          var registry = viewer.get("elementRegistry");
          var focus = current.map(function (id) { return registry.get(id); }).filter(Boolean)[0];
          canvas.zoom("fit-viewport", "auto");
          if (focus && canvas.zoom() < 0.75) { showCurrent(canvas, focus); }  // a wide diagram: the step readable
          mark(viewer, completed.filter(function (id) { return current.indexOf(id) < 0; }), "tether-done");
          mark(viewer, current, "tether-current");
          var marks = JSON.parse(container.getAttribute("data-marks") || "{}");
          Object.keys(marks).forEach(function (name) { mark(viewer, marks[name], "tether-" + name); });
          zoomButtons(container.parentNode, canvas, focus);
          container.setAttribute("data-rendered", "true");
        })
        .catch(function (error) {
          container.setAttribute("data-rendered", "error");
          container.insertAdjacentHTML("beforeend", "<p class='notice'>The diagram could not be drawn.</p>");
          if (window.console) { console.error(error); }
        });
    });
  });
}());
