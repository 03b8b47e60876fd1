/* The studio's decision tables and forms: a business rule task's panel offers "Edit decision table", which opens
   the decision the task names (or a new table with that id) in a dmn-js editor served locally; Save keeps the
   DMN file with the draft and checks the draft again. A form file (JSON Schema) chosen on the page is kept with
   the draft and offered in the user tasks' Form list. Hooks into studio.js through window.tetherStudio. */
(function () {
  "use strict";

  var studio = window.tetherStudio;
  var root = document.querySelector("[data-studio]");
  if (!studio || !root) { return; }
  var options = studio.options;
  var section = document.querySelector("[data-studio-dmn]");
  var status = section.querySelector("[data-studio-dmn-status]");
  var editor = null;   // the dmn-js modeler, made when first needed
  var editing = null;  // { file, decisionId, element }

  function decisionUrl(file) { return root.getAttribute("data-decision-url") + encodeURIComponent(file); }

  function fileOf(decisionId) {
    return (options.decisions || []).filter(function (d) { return d.decision_id === decisionId; })[0] || null;
  }

  function escapeXml(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  // A new decision table with the given id: one input and one output column to start from, no rules yet.
  function newTable(decisionId, name) {
    var id = escapeXml(decisionId), label = escapeXml(name || decisionId);
    return '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="Definitions_' + id + '" name="' + label +
      '" namespace="http://tether.example/dmn">\n' +
      '  <decision id="' + id + '" name="' + label + '">\n' +
      '    <decisionTable id="DecisionTable_' + id + '" hitPolicy="UNIQUE">\n' +
      '      <input id="Input_1" label="Input">\n' +
      '        <inputExpression id="InputExpression_1" typeRef="string"><text>value</text></inputExpression>\n' +
      '      </input>\n' +
      '      <output id="Output_1" label="Result" name="result" typeRef="string" />\n' +
      '    </decisionTable>\n' +
      '  </decision>\n' +
      '</definitions>\n';
  }

  // dmn-js opens DMN 1.3 only: a DMN 1.2 (or 1.1) table is read as 1.3 (for a decision table only the namespace
  // differs) and saved as 1.3; the designer is told.
  var DMN13 = "https://www.omg.org/spec/DMN/20191111/MODEL/";
  var OLDER = [
    ["http://www.omg.org/spec/DMN/20180521/MODEL/", "1.2"],
    ["http://www.omg.org/spec/DMN/20151101/dmn.xsd", "1.1"]
  ];

  function asDmn13(xml) {
    var version = null;
    OLDER.forEach(function (pair) {
      if (xml.indexOf(pair[0]) >= 0) { xml = xml.split(pair[0]).join(DMN13); version = pair[1]; }
    });
    xml = xml.split("http://www.omg.org/spec/DMN/20180521/DMNDI/").join("https://www.omg.org/spec/DMN/20191111/DMNDI/");
    return { xml: xml, upgraded: version };
  }

  function defaultDecisionId(bo) {
    return String(bo.id || "decision").replace(/[^A-Za-z0-9_]/g, "_") + "_decision";
  }

  function say(text, state) {
    status.textContent = text;
    if (state) { status.setAttribute("data-state", state); } else { status.removeAttribute("data-state"); }
  }

  function open(element) {
    var bo = element.businessObject;
    var decisionId = studio.getText(bo, "calledDecisionId");
    if (!decisionId) {
      decisionId = defaultDecisionId(bo);
      studio.setText(element, bo, "calledDecisionId", decisionId);
    }
    var known = fileOf(decisionId);
    var file = known ? known.name : decisionId.replace(/[^A-Za-z0-9._-]/g, "_") + ".dmn";
    var loading = known
      ? fetch(decisionUrl(file), { credentials: "same-origin" }).then(function (r) {
          if (!r.ok) { throw new Error("the decision table could not be read (" + r.status + ")"); }
          return r.text();
        })
      : Promise.resolve(newTable(decisionId, bo.name));
    editing = { file: file, decisionId: decisionId, element: element };
    section.hidden = false;
    section.querySelector("[data-studio-dmn-title]").textContent =
      "Decision table " + decisionId + " (" + file + (known ? "" : ", new") + ")";
    say(known ? "Loading…" : "A new table: add rules, then save it.", null);
    if (!editor) {
      editor = new window.DmnJS({ container: section.querySelector("[data-studio-dmn-canvas]") });
    }
    var upgraded = null;
    return loading.then(function (xml) {
      var read = asDmn13(xml);
      upgraded = read.upgraded;
      return editor.importXML(read.xml);
    }).then(function () {
      var table = editor.getViews().filter(function (v) { return v.type === "decisionTable"; })[0];
      return table ? editor.open(table) : null;
    }).then(function () {
      if (known) {
        say(upgraded ? "This table was written as DMN " + upgraded + ": it is shown, and will be saved, as DMN 1.3." : "", null);
      }
      section.setAttribute("data-open", decisionId);
      section.scrollIntoView({ block: "start" });
    }).catch(function (error) { say("The decision table could not be opened: " + error.message, "error"); });
  }

  function save() {
    if (!editing || !editor) { return; }
    var file = editing.file;
    say("Saving…", null);
    editor.saveXML({ format: true }).then(function (result) {
      return studio.post(decisionUrl(file), { xml: result.xml, etag: studio.state.etag });
    }).then(function (answer) {
      if (studio.saved(answer, status)) { status.setAttribute("data-state", "stale"); return; }
      if (answer.status !== 200) {
        var error = answer.data.error || {};
        var line = (error.details || {}).line;
        say("Not saved: " + (error.message || answer.status) + (line ? " (line " + line + ")" : ""), "error");
        return;
      }
      options.decisions = answer.data.decisions;
      showFiles(answer.data);
      say("Saved " + file + ". The draft is checked again with it.", "saved");
      studio.check();
    }).catch(function (error) { say("Not saved: " + error.message, "error"); });
  }

  function close() {
    section.hidden = true;
    section.removeAttribute("data-open");
    editing = null;
  }

  section.querySelector("[data-studio-dmn-save]").addEventListener("click", save);
  section.querySelector("[data-studio-dmn-close]").addEventListener("click", close);

  studio.onPanel(function (element, bo) {
    if (!studio.is(element, "bpmn:BusinessRuleTask")) { return; }
    studio.heading("Decision table");
    var decisionId = studio.getText(bo, "calledDecisionId");
    studio.textField("Decision id", decisionId, function (v) { studio.setText(element, bo, "calledDecisionId", v); },
      "The id of the DMN decision this task evaluates; its outputs land in the process data.");
    var known = decisionId && fileOf(decisionId);
    studio.panel.appendChild(studio.el("p", { "class": "hint" }, known ? "In " + known.name + " (kept with the draft)."
      : decisionId ? "No table of the draft has this id yet: Edit creates one." : "Edit creates a table for this task."));
    if (!window.DmnJS) {
      studio.panel.appendChild(studio.el("p", { "class": "notice" },
        "The decision table editor is not installed on this server (run make install)."));
      return;
    }
    var button = studio.el("button", { type: "button", "data-testid": "studio-edit-decision" }, "Edit decision table");
    button.addEventListener("click", function () { open(element); });
    studio.panel.appendChild(button);
  });

  /* ---------- the draft's own forms and decision tables ---------- */

  var files = document.querySelector("[data-studio-files]");
  var formStatus = document.querySelector("[data-studio-form-status]");

  function showFiles(data) {
    files.innerHTML = "";
    var decisions = (data.decisions || []).map(function (d) { return d.name + " (decision " + d.decision_id + ")"; });
    files.appendChild(studio.el("li", {}, "Decision tables: " + (decisions.join(", ") || "none") + "."));
    files.appendChild(studio.el("li", {}, "Forms: " + ((data.forms || []).join(", ") || "none") + "."));
  }

  function offerForm(name) {
    var list = /\.uischema\.json$/.test(name) ? "ui_schemas" : /\.message\.json$/.test(name) ? "payload_schemas" : "forms";
    if (options[list].indexOf(name) < 0) { options[list].push(name); options[list].sort(); }
  }

  document.querySelector("[data-studio-form-file]").addEventListener("change", function (event) {
    var input = event.target;
    var file = input.files && input.files[0];
    if (!file) { return; }
    formStatus.textContent = "Adding " + file.name + "…";
    file.text().then(function (text) {
      return studio.post(root.getAttribute("data-form-url") + encodeURIComponent(file.name),
        { schema: text, etag: studio.state.etag });
    }).then(function (answer) {
      input.value = "";
      if (studio.saved(answer, formStatus)) { return; }
      if (answer.status !== 200) {
        var error = answer.data.error || {};
        var line = (error.details || {}).line;
        formStatus.textContent = "Not added: " + (error.message || answer.status) + (line ? " (line " + line + ")" : "");
        return;
      }
      offerForm(file.name);
      showFiles(answer.data);
      formStatus.textContent = "Added " + file.name + ": a user task's Form list offers it.";
      studio.render();
      studio.check();
    });
  });

  showFiles({ decisions: options.decisions, forms: options.draft_forms });
  window.tetherStudioDmn = { open: open, editor: function () { return editor; } };
})();
