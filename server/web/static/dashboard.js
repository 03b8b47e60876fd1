/* The control tower's live updates: the server's event stream when it has one, else a refresh every few
   seconds. Either way the rows come from the server, drawn by the same template as the first page. */
(function () {
  "use strict";
  var EVENT_TYPES = ["therapy.started", "therapy.completed", "therapy.cancelled", "task.ready", "task.completed",
    "task.escalated", "timer.fired", "message.received", "custody.transferred", "coi.mismatch",
    "condition.excursion", "alert.raised", "incident.opened", "incident.resolved"];

  document.addEventListener("DOMContentLoaded", function () {
    var board = document.querySelector("[data-dashboard]");
    if (!board) { return; }
    var status = document.querySelector("[data-live-status]");
    var rowsUrl = board.getAttribute("data-rows-url");
    var eventsUrl = board.getAttribute("data-events-url");
    var seconds = parseInt(board.getAttribute("data-poll-seconds") || "3", 10);
    var pending = null, polling = null, busy = false;

    function say(text, live) {
      if (!status) { return; }
      status.textContent = text;
      status.classList.toggle("live", !!live);
    }

    function refresh() {
      if (busy) { return; }
      busy = true;
      fetch(rowsUrl, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) { throw new Error("status " + response.status); }
          return response.text();
        })
        .then(function (html) {
          var active = document.activeElement;
          var row = active && board.contains(active) ? active.closest("[data-therapy-id]") : null;
          var rowId = row ? row.getAttribute("data-therapy-id") : null;
          board.innerHTML = html;
          board.setAttribute("data-refreshed-at", new Date().toISOString());
          if (rowId) {
            var again = board.querySelector("[data-therapy-id='" + rowId + "'] a");
            if (again) { again.focus(); }
          }
        })
        .catch(function () { say("Live updates paused: the server did not answer (log in again?)", false); })
        .then(function () { busy = false; });
    }

    function soon() {
      if (pending) { clearTimeout(pending); }
      pending = setTimeout(refresh, 250);
    }

    function poll() {
      if (polling) { return; }
      say("Live: refreshing every " + seconds + " s", true);
      polling = setInterval(refresh, seconds * 1000);
    }

    if (!window.EventSource || !eventsUrl) { poll(); return; }
    var opened = false;
    var source = new EventSource(eventsUrl, { withCredentials: true });
    source.onopen = function () {
      opened = true;
      if (polling) { clearInterval(polling); polling = null; }
      say("Live: event stream", true);
    };
    source.onmessage = soon;
    EVENT_TYPES.forEach(function (type) { source.addEventListener(type, soon); });
    source.onerror = function () {
      if (!opened) { source.close(); }
      poll();
    };
  });
}());
