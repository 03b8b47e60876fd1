/* Draws each shipment's reported positions with Leaflet (served locally): no map tiles, only the positions on a
   plain background, joined in the order they were recorded, the origin and the last position labelled. */
(function () {
  "use strict";

  function draw(container) {
    var data = JSON.parse(container.getAttribute("data-map") || "{}");
    var points = data.points || [];
    if (!points.length) { return; }
    var map = window.L.map(container, { attributionControl: false, zoomSnap: 0.25, maxZoom: 14 });
    var path = points.map(function (p) { return [p.lat, p.lng]; });
    // The view first: without tiles nothing else gives the map its place, and labels need it to be placed.
    if (path.length === 1) {
      map.setView(path[0], 8);
    } else {
      map.fitBounds(window.L.latLngBounds(path), { padding: [40, 40] });
    }
    window.L.polyline(path, { color: "#3a6ea5", weight: 3, opacity: 0.8, className: "shipment-route" }).addTo(map);
    points.forEach(function (point, index) {
      var last = index === points.length - 1;
      var first = index === 0;
      var marker = window.L.circleMarker([point.lat, point.lng], {
        radius: first || last ? 7 : 5,
        color: last ? "#b3261e" : "#24507a",
        fillColor: last ? "#e4574c" : "#ffffff",
        fillOpacity: 1,
        weight: 2,
        className: "shipment-marker" + (first ? " shipment-origin" : "") + (last ? " shipment-last" : "")
      }).addTo(map);
      marker.bindTooltip(point.at + (point.note ? " · " + point.note : ""));
      if (first) {
        marker.bindTooltip("Origin: " + data.origin, { permanent: true, direction: "left", className: "shipment-label" });
      }
      if (last && !first) {
        marker.bindTooltip("Last: " + point.at, { permanent: true, direction: "top", className: "shipment-label" });
      }
    });
    container.setAttribute("data-rendered", "true");
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.L) { return; }
    document.querySelectorAll("[data-shipment-map]").forEach(function (container) {
      try {
        draw(container);
      } catch (error) {
        container.setAttribute("data-rendered", "error");
        container.insertAdjacentHTML("beforeend", "<p class='notice'>The map could not be drawn.</p>");
        if (window.console) { console.error(error); }
      }
    });
  });
})();
