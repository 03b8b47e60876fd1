/* The studio's "Try it" panel: the draft as drawn run on a simulated clock (POST /studio/<id>/simulate).
   A table gives each user task and each awaited message its least and most hours; a select per exclusive
   gateway forces a branch. "Run once" paints the path on the diagram with each step's simulated time and lists
   the events, alerts and the vein-to-vein time; "Run N" draws the vein-to-vein histogram (Chart.js, served
   locally) and tables of the ends reached and the escalations fired. Uses window.tetherStudio (studio.js). */
(function () {
  "use strict";

  var section = document.querySelector("[data-studio-try]");
  var studio = window.tetherStudio;
  var root = document.querySelector("[data-studio]");
  if (!section || !studio || !root) { return; }
  var modeler = studio.modeler;
  var registry = modeler.get("elementRegistry");
  var canvas = modeler.get("canvas");
  var overlays = modeler.get("overlays");
  var entered = {};  // what the designer typed, by element id, kept while the table is redrawn
  var chosen = {};   // gateway id -> flow id
  var painted = [];
  var chart = null;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": root.getAttribute("data-csrf") },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) { return { status: response.status, data: data }; });
    });
  }

  function label(element) {
    var name = element.businessObject.name;
    return name ? name + " (" + element.id + ")" : element.id;
  }

  function hasMessage(element) {
    var defs = element.businessObject.eventDefinitions || [];
    return defs.some(function (d) { return d.$type === "bpmn:MessageEventDefinition"; });
  }

  // What takes time: user tasks and what waits for a message (a boundary message is a deviation: empty).
  function timedSteps() {
    return registry.filter(function (e) {
      if (e.type === "bpmn:UserTask" || e.type === "bpmn:ReceiveTask") { return true; }
      return (e.type === "bpmn:IntermediateCatchEvent" || e.type === "bpmn:BoundaryEvent") && hasMessage(e);
    });
  }

  function gateways() {
    return registry.filter(function (e) { return e.type === "bpmn:ExclusiveGateway" && (e.outgoing || []).length > 1; });
  }

  function flowLabel(flow) {
    var name = flow.businessObject.name;
    var target = flow.target ? (flow.target.businessObject.name || flow.target.id) : "?";
    return (name ? name + ": " : "") + "to " + target;
  }

  var form = el("form", { "class": "try-form", "data-testid": "try-form" });
  var tableWrap = el("div", { "class": "try-table-wrap" });
  var gatewayWrap = el("div", { "class": "try-gateways" });
  var controls = el("div", { "class": "try-controls" });
  var status = el("p", { role: "status", "aria-live": "polite", "data-testid": "try-status" });
  var output = el("div", { "class": "try-output", "data-testid": "try-output" });
  form.appendChild(tableWrap);
  form.appendChild(gatewayWrap);
  form.appendChild(controls);
  section.appendChild(form);
  section.appendChild(status);
  section.appendChild(output);

  function number(id, value, text) {
    var input = el("input", { type: "number", id: id, min: "0", max: "8760", step: "any", value: value });
    var wrap = el("span", { "class": "try-control" });
    wrap.appendChild(el("label", { "for": id }, text));
    wrap.appendChild(input);
    return { wrap: wrap, input: input };
  }

  var runOnce = el("button", { type: "button", "class": "primary", "data-testid": "try-run" }, "Run once");
  var runs = number("try-runs", "100", "Runs");
  runs.input.setAttribute("min", "1");
  runs.input.setAttribute("max", "500");
  runs.input.setAttribute("step", "1");
  var seed = number("try-seed", "1", "Seed");
  seed.input.setAttribute("step", "1");
  var runBatch = el("button", { type: "button", "data-testid": "try-batch" }, "Run N");
  [runOnce, runs.wrap, seed.wrap, runBatch].forEach(function (node) { controls.appendChild(node); });

  function remember() {
    tableWrap.querySelectorAll("input[data-id]").forEach(function (input) {
      var id = input.getAttribute("data-id");
      entered[id] = entered[id] || {};
      entered[id][input.getAttribute("data-end")] = input.value;
    });
    gatewayWrap.querySelectorAll("select[data-id]").forEach(function (select) {
      chosen[select.getAttribute("data-id")] = select.value;
    });
  }

  function draw() {
    remember();
    tableWrap.innerHTML = "";
    var steps = timedSteps();
    var table = el("table", { "class": "list compact try-durations", "data-testid": "try-durations" });
    table.appendChild(el("caption", {}, "Hours each step takes (drawn uniformly between the least and the most)"));
    var head = el("tr");
    ["Step", "Least hours", "Most hours"].forEach(function (h) { head.appendChild(el("th", { scope: "col" }, h)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    steps.forEach(function (step) {
      var deviation = step.type === "bpmn:BoundaryEvent";
      var row = el("tr", { "data-step": step.id });
      row.appendChild(el("th", { scope: "row" }, label(step) + (deviation ? " (sent only when given hours)" : "")));
      ["low", "high"].forEach(function (end) {
        var kept = (entered[step.id] || {})[end];
        var input = el("input", {
          type: "number", min: "0", max: "8760", step: "any", "data-id": step.id, "data-end": end,
          value: kept !== undefined ? kept : (deviation ? "" : "1"),
          "aria-label": (end === "low" ? "Least" : "Most") + " hours for " + label(step)
        });
        row.appendChild(el("td")).appendChild(input);
      });
      body.appendChild(row);
    });
    if (!steps.length) { tableWrap.appendChild(el("p", { "class": "muted" }, "No user task or message to time yet.")); }
    else { tableWrap.appendChild(table); }

    gatewayWrap.innerHTML = "";
    gateways().forEach(function (gateway) {
      var id = "try-gateway-" + gateway.id;
      var field = el("div", { "class": "field" });
      field.appendChild(el("label", { "for": id }, "At " + label(gateway)));
      var select = el("select", { id: id, "data-id": gateway.id, "data-testid": "try-gateway" });
      select.appendChild(el("option", { value: "" }, "as the conditions decide"));
      gateway.outgoing.forEach(function (flow) {
        var option = el("option", { value: flow.id }, flowLabel(flow));
        if (chosen[gateway.id] === flow.id) { option.selected = true; }
        select.appendChild(option);
      });
      field.appendChild(select);
      gatewayWrap.appendChild(field);
    });
  }

  function options() {
    remember();
    var durations = {};
    Object.keys(entered).forEach(function (id) {
      var low = entered[id].low, high = entered[id].high;
      if (low === "" && high === "") { return; }
      if (!registry.get(id)) { return; }
      low = low === "" ? high : low;
      high = high === "" ? low : high;
      durations[id] = [Number(low), Number(high)];
    });
    var gates = {};
    Object.keys(chosen).forEach(function (id) { if (chosen[id] && registry.get(id)) { gates[id] = chosen[id]; } });
    return { durations: durations, gateways: gates };
  }

  function clearPaint() {
    painted.forEach(function (id) { if (registry.get(id)) { canvas.removeMarker(id, "try-passed"); } });
    painted = [];
    overlays.remove({ type: "try-time" });
  }

  function hoursAfter(start, moment) {
    var hours = (Date.parse(moment) - Date.parse(start)) / 3600000;
    return hours >= 48 ? "day " + (Math.floor(hours / 24) + 1) + ", +" + Math.round(hours) + " h" : "+" + (Math.round(hours * 10) / 10) + " h";
  }

  function paint(run) {
    clearPaint();
    run.path.forEach(function (step) {
      if (!registry.get(step.activity_id)) { return; }
      if (painted.indexOf(step.activity_id) < 0) {
        canvas.addMarker(step.activity_id, "try-passed");
        painted.push(step.activity_id);
      }
      overlays.remove({ element: step.activity_id, type: "try-time" });
      overlays.add(step.activity_id, "try-time", {
        position: { bottom: -6, left: 0 },
        html: el("span", { "class": "try-time", "data-testid": "try-time" }, hoursAfter(run.started_at, step.ended_at))
      });
    });
  }

  function table(caption, headers, rows, testid) {
    var t = el("table", { "class": "list compact", "data-testid": testid });
    t.appendChild(el("caption", {}, caption));
    var head = el("tr");
    headers.forEach(function (h) { head.appendChild(el("th", { scope: "col" }, h)); });
    t.appendChild(el("thead")).appendChild(head);
    var body = t.appendChild(el("tbody"));
    rows.forEach(function (cells) {
      var row = el("tr");
      cells.forEach(function (c, i) { row.appendChild(el(i === 0 ? "th" : "td", i === 0 ? { scope: "row" } : {}, c)); });
      body.appendChild(row);
    });
    return t;
  }

  function eventText(e) {
    var words = {
      "timer.fired": "Timer fired", "message.delivered": "Message delivered", "task.escalated": "Escalation",
      "service.skipped": "Skipped in simulation", "task.cancelled": "Task withdrawn", "incident.opened": "Service failed",
      "form.invalid": "Form data refused", "error": "Error"
    };
    return words[e.type] || e.type;
  }

  function showRun(run) {
    output.innerHTML = "";
    paint(run);
    var v2v = run.vein_to_vein;
    var summary = el("dl", { "class": "try-summary" });
    [["Outcome", run.status === "completed" ? "Completed" : run.status.replace(/_/g, " ") + (run.problem ? ": " + run.problem : "")],
     ["End reached", run.end ? run.end.name : "none"],
     ["Simulated time", run.elapsed_hours + " h (" + run.steps + " steps)"],
     ["Vein-to-vein", v2v.hours === null ? "none (no infusion on this path)" : v2v.hours + " h (" + v2v.days + " days)"]]
      .forEach(function (pair) {
        summary.appendChild(el("dt", {}, pair[0]));
        summary.appendChild(el("dd", pair[0] === "Vein-to-vein" ? { "data-testid": "try-v2v" } : {}, pair[1]));
      });
    output.appendChild(summary);
    output.appendChild(table("Alerts and escalations raised", ["Raised", "Kind", "Role", "Message"],
      run.alerts.map(function (a) { return [hoursAfter(run.started_at, a.raised_at), a.kind, a.role, a.message]; }), "try-alerts"));
    output.appendChild(table("Events", ["When", "Event", "Element", "Detail"],
      run.events.map(function (e) {
        return [hoursAfter(run.started_at, e.at), eventText(e), e.name || e.activity_id || "", e.message || ""];
      }), "try-events"));
    output.appendChild(table("Path taken", ["Element", "Lane", "Started", "Ended", "Hours"],
      run.path.map(function (s) {
        return [s.name || s.activity_id, s.lane || "", hoursAfter(run.started_at, s.started_at), hoursAfter(run.started_at, s.ended_at), String(s.hours)];
      }), "try-path"));
  }

  function showBatch(report) {
    output.innerHTML = "";
    clearPaint();
    var v2v = report.vein_to_vein;
    var summary = el("p", { "data-testid": "try-batch-summary" },
      report.completed_runs + " runs (seed " + report.seed + ")" + (report.stopped ? "; " + report.stopped : "") + ". Vein-to-vein " +
      (v2v.count ? "in " + v2v.count + " runs: min " + v2v.min_hours + " h, 10th percentile " + v2v.p10_hours + " h, median " +
        v2v.p50_hours + " h, 90th percentile " + v2v.p90_hours + " h, max " + v2v.max_hours + " h."
        : "in none: no run reached an infusion."));
    output.appendChild(summary);
    if (v2v.count) {
      var figure = el("figure", { "class": "try-chart" });
      var chartCanvas = el("canvas", {
        id: "try-histogram", role: "img", "data-testid": "try-histogram",
        "aria-label": "Histogram of the simulated vein-to-vein time in hours over " + v2v.count + " runs"
      });
      figure.appendChild(chartCanvas);
      output.appendChild(figure);
      var labels = v2v.histogram.map(function (b) { return b.from_hours + "–" + b.to_hours + " h"; });
      if (chart) { chart.destroy(); chart = null; }
      if (window.Chart) {
        chart = new window.Chart(chartCanvas, {
          type: "bar",
          data: { labels: labels, datasets: [{ label: "runs", data: v2v.histogram.map(function (b) { return b.count; }), backgroundColor: "#2f6f9f" }] },
          options: { responsive: true, maintainAspectRatio: false, animation: false,
            scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "runs" } },
              x: { title: { display: true, text: "vein-to-vein hours" } } } }
        });
      }
      output.appendChild(table("Vein-to-vein histogram", ["Hours", "Runs"],
        v2v.histogram.map(function (b, i) { return [labels[i], String(b.count)]; }), "try-histogram-table"));
    }
    output.appendChild(table("Ends reached", ["End", "Runs", "Share"],
      report.ends.map(function (e) { return [e.name, String(e.count), Math.round(e.share * 100) + " %"]; }), "try-ends"));
    output.appendChild(table("Escalations", ["Escalation", "Late step", "Runs", "Times", "Share of runs"],
      report.escalations.map(function (e) {
        var late = registry.get(e.late_activity_id);
        return [e.name, late ? label(late) : (e.late_activity_id || ""), String(e.runs), String(e.times), Math.round(e.share * 100) + " %"];
      }), "try-escalations"));
    if (report.problems.length) {
      output.appendChild(table("Runs that did not end", ["Why", "Runs"],
        report.problems.map(function (p) { return [p.problem, String(p.count)]; }), "try-problems"));
    }
  }

  function run(batch) {
    var body = options();
    if (batch) {
      body.runs = parseInt(runs.input.value, 10);
      body.seed = parseInt(seed.input.value, 10) || 0;
    }
    status.textContent = batch ? "Running " + body.runs + " simulated therapies…" : "Running…";
    runOnce.disabled = runBatch.disabled = true;
    modeler.saveXML({ format: true })
      .then(function (result) { body.bpmn = result.xml; return post(section.getAttribute("data-simulate-url"), body); })
      .then(function (answer) {
        if (answer.status !== 200) {
          var error = answer.data.error || {};
          var fields = (error.details || {}).fields;
          status.textContent = "Not run: " + (error.message || answer.status) + (fields ? " " + JSON.stringify(fields) : "");
          status.setAttribute("data-state", "problems");
          return;
        }
        status.removeAttribute("data-state");
        if (batch) {
          showBatch(answer.data);
          status.textContent = "Batch done.";
        } else {
          showRun(answer.data);
          status.textContent = "Run done: " + answer.data.status.replace(/_/g, " ") + ".";
        }
        section.setAttribute("data-tried", batch ? "batch" : "once");
      })
      .catch(function () { status.textContent = "Not run (network)."; })
      .then(function () { runOnce.disabled = runBatch.disabled = false; });
  }

  runOnce.addEventListener("click", function () { run(false); });
  runBatch.addEventListener("click", function () { run(true); });

  var redraw = null;
  modeler.on("import.done", draw);
  modeler.on("commandStack.changed", function () {
    window.clearTimeout(redraw);
    redraw = window.setTimeout(draw, 800);
  });
  if (root.getAttribute("data-rendered") === "true") { draw(); }
})();
