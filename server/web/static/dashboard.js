/* The control tower's live updates. Every few seconds the page asks the server whether anything changed
   since the version it shows (GET <rows>?since=<version>): 204 and no body while nothing did, else the chips,
   rows and pager drawn by the same template as the first page. Nothing is held open on the server between
   two questions, so any number of tabs stay live; a hidden tab asks again as soon as it is shown. */
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var board = document.querySelector("[data-dashboard]");
    if (!board) { return; }
    var status = document.querySelector("[data-live-status]");
    var rowsUrl = board.getAttribute("data-rows-url");
    var version = board.getAttribute("data-version") || "";
    var seconds = parseInt(board.getAttribute("data-poll-seconds") || "3", 10);
    var busy = false;

    function say(text, live) {
      if (!status) { return; }
      status.textContent = text;
      status.classList.toggle("live", !!live);
    }

    function draw(html) {
      var active = document.activeElement;
      var row = active && board.contains(active) ? active.closest("[data-therapy-id]") : null;
      var rowId = row ? row.getAttribute("data-therapy-id") : null;
      var scroller = board.querySelector(".table-scroll");
      var left = scroller ? scroller.scrollLeft : 0;
      board.innerHTML = html;
      board.setAttribute("data-refreshed-at", new Date().toISOString());
      scroller = board.querySelector(".table-scroll");
      if (scroller) { scroller.scrollLeft = left; }
      if (rowId) {
        var again = board.querySelector("[data-therapy-id='" + rowId + "'] a");
        if (again) { again.focus(); }
      }
    }

    function check() {
      if (busy || document.hidden) { return; }
      busy = true;
      var url = rowsUrl + (rowsUrl.indexOf("?") < 0 ? "?" : "&") + "since=" + encodeURIComponent(version);
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
        .then(function (response) {
          if (response.redirected || !response.ok) { throw new Error("status " + response.status); }
          version = response.headers.get("X-Tower-Version") || version;
          board.setAttribute("data-version", version);
          board.setAttribute("data-checked-at", new Date().toISOString());
          say("Live: checking every " + seconds + " s", true);
          return response.status === 204 ? null : response.text();
        })
        .then(function (html) { if (html !== null) { draw(html); } })
        .catch(function () { say("Live updates paused: the server did not answer (log in again?)", false); })
        .then(function () { busy = false; });
    }

    say("Live: checking every " + seconds + " s", true);
    setInterval(check, seconds * 1000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { check(); } });
  });
}());
