/* The studio: a bpmn-js modeler (served locally) with Tether's properties panel. The panel writes the
   spiffworkflow extension elements Tether reads (docs/bpmn-conventions.md) through the modeler's commands, so
   undo works; after each change the draft is checked and each problem is pinned on its element. */
(function () {
  "use strict";

  var SPIFF = "http://spiffworkflow.org/bpmn/schema/1.0/core";
  var root = document.querySelector("[data-studio]");
  if (!root || !window.BpmnJS) { return; }
  var options = JSON.parse(document.getElementById("studio-options").textContent);
  var initialXml = JSON.parse(document.getElementById("studio-xml").textContent);
  var panel = root.querySelector("[data-studio-panel]");
  var modeler = new window.BpmnJS({ container: root.querySelector("[data-studio-canvas]") });
  var moddle = modeler.get("moddle");
  var modeling = modeler.get("modeling");
  var registry = modeler.get("elementRegistry");
  var canvas = modeler.get("canvas");
  var overlays = modeler.get("overlays");
  var selection = modeler.get("selection");
  var current = null;  // the selected element
  var lastProblems = [];
  var checkedOk = false;
  var checkTimer = null;
  var checkSeq = 0;
  // The draft's version this page last saw: every save sends it, and a save to an older one is refused (409).
  var state = { etag: root.getAttribute("data-etag") };
  var hooks = [];  // functions(element, bo) adding their fields to the panel (studio-dmn.js)

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": root.getAttribute("data-csrf") },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().then(function (data) { return { status: response.status, data: data }; });
    });
  }

  function xml() {
    return modeler.saveXML({ format: true }).then(function (result) { return result.xml; });
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  /* ---------- spiffworkflow extension elements (kept as generic elements, whatever else they hold) ---------- */

  function localName(node) { return String(node.$type || "").split(":").pop(); }

  function children(node) {
    if (node.$type === "bpmn:ExtensionElements") { return node.values || (node.values = []); }
    return node.$children || (node.$children = []);
  }

  function child(node, name, create) {
    var list = children(node);
    var found = list.filter(function (c) { return localName(c) === name; })[0];
    if (!found && create) {
      found = moddle.createAny("spiffworkflow:" + name, SPIFF, {});
      found.$parent = node;
      list.push(found);
    }
    return found || null;
  }

  function extensions(bo, create) {
    if (!bo.extensionElements && create) {
      bo.extensionElements = moddle.create("bpmn:ExtensionElements", { values: [] });
      bo.extensionElements.$parent = bo;
    }
    return bo.extensionElements || null;
  }

  function getProperty(bo, name) {
    var ext = extensions(bo, false);
    var props = ext && child(ext, "properties", false);
    var prop = props && children(props).filter(function (p) { return p.name === name; })[0];
    return prop ? prop.value : "";
  }

  // Commit a change made to an element's extension elements as one modeler command (undoable, re-checked).
  function touch(element, bo) {
    if (bo === element.businessObject) {
      modeling.updateProperties(element, { extensionElements: bo.extensionElements });
    } else {
      modeling.updateModdleProperties(element, bo, { extensionElements: bo.extensionElements });
    }
  }

  function setProperty(element, bo, name, value) {
    var ext = extensions(bo, true);
    var props = child(ext, "properties", true);
    var list = children(props);
    var prop = list.filter(function (p) { return p.name === name; })[0];
    if (value) {
      if (!prop) {
        prop = moddle.createAny("spiffworkflow:property", SPIFF, { name: name });
        prop.$parent = props;
        list.push(prop);
      }
      prop.value = value;
    } else if (prop) {
      list.splice(list.indexOf(prop), 1);
      if (!list.length) { ext.values.splice(ext.values.indexOf(props), 1); }
    }
    touch(element, bo);
  }

  function getText(bo, name) {
    var ext = extensions(bo, false);
    var node = ext && child(ext, name, false);
    return node ? (node.$body || "") : "";
  }

  function setText(element, bo, name, value) {
    var ext = extensions(bo, true);
    var node = child(ext, name, !!value);
    if (value) { node.$body = value; } else if (node) { ext.values.splice(ext.values.indexOf(node), 1); }
    touch(element, bo);
  }

  /* ---------- what the selected element is ---------- */

  function is(element, type) {
    var bo = element.businessObject;
    return bo && typeof bo.$instanceOf === "function" && bo.$instanceOf(type);
  }

  function eventDefinition(element, type) {
    var defs = element.businessObject.eventDefinitions || [];
    return defs.filter(function (d) { return d.$instanceOf(type); })[0] || null;
  }

  function processOf(element) {
    if (is(element, "bpmn:Participant")) { return element.businessObject.processRef; }
    if (is(element, "bpmn:Process")) { return element.businessObject; }
    return null;
  }

  function laneOf(element) {
    var x = element.x + element.width / 2, y = element.y + element.height / 2;
    var lanes = registry.filter(function (e) {
      return e.type === "bpmn:Lane" && x >= e.x && x <= e.x + e.width && y >= e.y && y <= e.y + e.height;
    });
    lanes.sort(function (a, b) { return a.width * a.height - b.width * b.height; });
    return lanes[0] || null;
  }

  function participantOf(element) {
    var parent = element.parent;
    while (parent && parent.type !== "bpmn:Participant") { parent = parent.parent; }
    return parent || null;
  }

  /* ---------- the panel ---------- */

  var fieldCount = 0;

  function field(label, input, hint) {
    var id = "studio-field-" + (++fieldCount);
    input.id = id;
    var wrap = el("div", { "class": "field" });
    wrap.appendChild(el("label", { "for": id }, label));
    wrap.appendChild(input);
    if (hint) {
      var hintId = id + "-hint";
      input.setAttribute("aria-describedby", hintId);
      wrap.appendChild(el("p", { "class": "hint", id: hintId }, hint));
    }
    panel.appendChild(wrap);
    return input;
  }

  function textField(label, value, onChange, hint, attrs) {
    var input = el("input", Object.assign({ type: "text" }, attrs || {}));
    input.value = value || "";
    input.addEventListener("change", function () { onChange(input.value.trim()); });
    return field(label, input, hint);
  }

  function areaField(label, value, onChange, hint) {
    var input = el("textarea", { rows: "3" });
    input.value = value || "";
    input.addEventListener("change", function () { onChange(input.value.trim()); });
    return field(label, input, hint);
  }

  function selectField(label, value, choices, onChange, hint) {
    var input = el("select");
    choices.forEach(function (choice) {
      var pair = Array.isArray(choice) ? choice : [choice, choice];
      var option = el("option", { value: pair[0] }, pair[1]);
      if (pair[0] === (value || "")) { option.selected = true; }
      input.appendChild(option);
    });
    if (value && choices.every(function (c) { return (Array.isArray(c) ? c[0] : c) !== value; })) {
      var unknown = el("option", { value: value }, value + " (not available)");
      unknown.selected = true;
      input.appendChild(unknown);
    }
    input.addEventListener("change", function () { onChange(input.value); });
    return field(label, input, hint);
  }

  function heading(text) { panel.appendChild(el("h3", {}, text)); }

  function render() {
    fieldCount = 0;
    panel.innerHTML = "";
    var selected = selection.get();
    current = selected.length === 1 ? selected[0] : null;
    if (current && current.type === "label") { current = current.labelTarget || null; }
    var element = current;
    if (!element) {
      var rootElement = canvas.getRootElement();
      element = rootElement;
    }
    var bo = element && element.businessObject;
    if (!bo) { panel.appendChild(el("p", { "class": "muted" }, "Select an element of the diagram.")); return; }
    heading(typeName(element) + (bo.id ? " " + bo.id : ""));
    if (!is(element, "bpmn:Process") && !is(element, "bpmn:Collaboration")) {
      textField("Name", bo.name, function (v) { modeling.updateLabel(element, v); },
        is(element, "bpmn:Lane") ? null : "What people see on the diagram and in their task list.");
    }
    var process = processOf(element) || (is(element, "bpmn:Collaboration") ? onlyProcess(element) : null);
    if (process) { processFields(element, process); }
    if (is(element, "bpmn:Lane")) { laneFields(element); }
    if (is(element, "bpmn:Task") || is(element, "bpmn:SubProcess") || is(element, "bpmn:CallActivity")) {
      kindField(element);
    }
    if (is(element, "bpmn:UserTask")) { userTaskFields(element); }
    if (is(element, "bpmn:ServiceTask")) { serviceTaskFields(element); }
    if (is(element, "bpmn:ReceiveTask") || eventDefinition(element, "bpmn:MessageEventDefinition")) {
      messageFields(element);
    }
    if ((is(element, "bpmn:CatchEvent") && !is(element, "bpmn:StartEvent")) || is(element, "bpmn:IntermediateThrowEvent")) {
      eventKindField(element);
    }
    if (eventDefinition(element, "bpmn:TimerEventDefinition")) { timerFields(element); }
    if (is(element, "bpmn:Activity")) {
      textField("Phase", getProperty(bo, "phase"), function (v) { setProperty(element, bo, "phase", v); },
        "The part of the journey (referral, collection, manufacturing, release, shipment, infusion, follow-up).",
        { list: "studio-phases" });
      textField("Condition range (°C)", getProperty(bo, "conditionRange"),
        function (v) { setProperty(element, bo, "conditionRange", v); },
        "Allowed temperature while the therapy is here, low end first: 2..8 or -196..-150.");
    }
    if (is(element, "bpmn:SequenceFlow")) { flowFields(element); }
    hooks.forEach(function (hook) { hook(element, bo); });
    problemsOf(element).forEach(function (p) {
      panel.appendChild(el("p", { "class": "studio-problem-text", role: "note" }, "Problem: " + p.message));
    });
  }

  function typeName(element) {
    return String(element.type || "").replace("bpmn:", "").replace(/([a-z])([A-Z])/g, "$1 $2");
  }

  function onlyProcess(element) {
    var participants = (element.businessObject.participants || []).filter(function (p) { return p.processRef; });
    return participants.length === 1 ? participants[0].processRef : null;
  }

  function processFields(element, process) {
    heading("Process");
    textField("Process key (id)", process.id, function (v) {
      if (v) { modeling.updateModdleProperties(element, process, { id: v }); }
    }, "The key therapies start by; a letter, then letters, digits, _ or -.");
    textField("Process name", process.name, function (v) { modeling.updateModdleProperties(element, process, { name: v }); });
    textField("Condition range of the whole process (°C)", getProperty(process, "conditionRange"),
      function (v) { setProperty(element, process, "conditionRange", v); });
  }

  function laneFields(element) {
    var bo = element.businessObject;
    panel.removeChild(panel.lastChild);  // a lane's name is its role: the select below sets it
    selectField("Role (the lane's name)", bo.name, [["", "choose a role"]].concat(options.roles), function (v) {
      modeling.updateLabel(element, v);
    }, "Every user task in this lane is completed by this role.");
    selectField("Party", getProperty(bo, "party"), [["", "treatment (default)"]].concat(options.parties), function (v) {
      setProperty(element, bo, "party", v);
    }, "Where this lane's tasks are done: the therapy's site of that party.");
    textField("Phase", getProperty(bo, "phase"), function (v) { setProperty(element, bo, "phase", v); },
      "The phase of every activity of the lane (an activity's own phase wins).", { list: "studio-phases" });
  }

  var KINDS = [
    ["bpmn:Task", "Task (choose a kind)"], ["bpmn:UserTask", "User task"], ["bpmn:ServiceTask", "Service task"],
    ["bpmn:ReceiveTask", "Receive task (waits for a message)"], ["bpmn:ScriptTask", "Script task"],
    ["bpmn:BusinessRuleTask", "Business rule task"], ["bpmn:CallActivity", "Call activity"]
  ];

  function kindField(element) {
    if (is(element, "bpmn:SubProcess")) { return; }
    selectField("Kind", element.type, KINDS, function (type) {
      var replaced = modeler.get("bpmnReplace").replaceElement(element, { type: type });
      selection.select(replaced);
    });
  }

  function eventKindField(element) {
    var kind = eventDefinition(element, "bpmn:TimerEventDefinition") ? "timer"
      : eventDefinition(element, "bpmn:MessageEventDefinition") ? "message" : "";
    selectField("Waits for", kind, [["", "choose"], ["timer", "a timer"], ["message", "a message"]], function (v) {
      if (!v) { return; }
      var type = is(element, "bpmn:BoundaryEvent") ? "bpmn:BoundaryEvent" : "bpmn:IntermediateCatchEvent";
      var target = { type: type, eventDefinitionType: v === "timer" ? "bpmn:TimerEventDefinition" : "bpmn:MessageEventDefinition" };
      if (is(element, "bpmn:BoundaryEvent")) { target.cancelActivity = element.businessObject.cancelActivity !== false; }
      var replaced = modeler.get("bpmnReplace").replaceElement(element, target);
      selection.select(replaced);
    });
  }

  function userTaskFields(element) {
    var bo = element.businessObject;
    heading("Who, where and what");
    var lane = laneOf(element);
    selectField("Role (its lane)", lane ? lane.businessObject.name : "",
      [["", lane ? "choose a role" : "not in a lane"]].concat(options.roles), function (v) { setRole(element, v); },
      lane ? "Renames the lane the task sits in." : "Adds a lane with this role around the task (draw a pool first if the process has none).");
    selectField("Party", getProperty(bo, "party"), [["", "the lane's (else treatment)"]].concat(options.parties),
      function (v) { setProperty(element, bo, "party", v); });
    selectField("Form", getProperty(bo, "formJsonSchemaFilename"), [["", "no form"]].concat(options.forms),
      function (v) { setProperty(element, bo, "formJsonSchemaFilename", v); }, "A JSON Schema shipped in forms/ or kept with the draft.");
    selectField("UI schema", getProperty(bo, "formUiSchemaFilename"), [["", "none"]].concat(options.ui_schemas),
      function (v) { setProperty(element, bo, "formUiSchemaFilename", v); });
    var form = getProperty(bo, "formJsonSchemaFilename");
    if (form) {
      var query = "?form=" + encodeURIComponent(form);
      var ui = getProperty(bo, "formUiSchemaFilename");
      if (ui) { query += "&ui=" + encodeURIComponent(ui); }
      var preview = el("p");
      preview.appendChild(el("a", { href: root.getAttribute("data-preview-url") + query, target: "_blank",
        rel: "noopener", "data-testid": "studio-form-preview" }, "Preview the form as site staff see it"));
      panel.appendChild(preview);
    }
    areaField("Instructions", getText(bo, "instructionsForEndUser"),
      function (v) { setText(element, bo, "instructionsForEndUser", v); }, "Shown with the task.");
    textField("Signature meaning", getProperty(bo, "signature"), function (v) { setProperty(element, bo, "signature", v); },
      "Empty: no signature. A meaning (approval, review, ...) or field: value=meaning, value=meaning.",
      { list: "studio-meanings" });
  }

  function setRole(element, role) {
    var lane = laneOf(element);
    if (lane) { modeling.updateLabel(lane, role); return; }
    if (!role) { return; }
    var participant = participantOf(element);
    if (!participant) {
      window.alert("Draw a pool around the process first (palette: Create pool/participant); then choose the role.");
      render();
      return;
    }
    var hadLanes = registry.filter(function (e) { return e.type === "bpmn:Lane" && e.parent === participant; }).length;
    var added = modeling.addLane(participant, "bottom");
    var around = laneOf(element);
    if (!hadLanes && around && around !== added) {
      modeling.removeShape(added);  // the participant's first lane now holds the task: the new empty one goes
      around = laneOf(element);
    }
    modeling.updateLabel(around || added, role);
    render();
  }

  function serviceTaskFields(element) {
    var bo = element.businessObject;
    heading("Operator");
    var ext = extensions(bo, false);
    var operator = ext && child(ext, "serviceTaskOperator", false);
    var names = Object.keys(options.operators);
    selectField("Operator", operator ? operator.id : "", [["", "choose an operator"]].concat(names.map(function (n) {
      return [n, n + " – " + options.operators[n]];
    })), function (v) {
      var extension = extensions(bo, true);
      var op = child(extension, "serviceTaskOperator", !!v);
      if (v) {
        op.id = v;
        child(op, "parameters", true);  // the schema wants the list, even empty
      } else if (op) { extension.values.splice(extension.values.indexOf(op), 1); }
      touch(element, bo);
      render();
    });
    if (!operator) { return; }
    textField("Result variable", operator.resultVariable, function (v) {
      if (v) { operator.resultVariable = v; } else { delete operator.resultVariable; }
      touch(element, bo);
    }, "The process data key the operator's result is stored under.");
    // One field per parameter the operator takes (an expression each: quote text, role = 'qa'); the upload
    // check refuses a missing required one and any the operator does not take.
    var takes = options.operator_parameters[operator.id] || [];
    var params = child(operator, "parameters", false);
    var given = params ? children(params) : [];
    function valueOf(name) {
      var found = given.filter(function (p) { return p.id === name; })[0];
      return found ? found.value || "" : "";
    }
    function setParameter(name, value) {
      var list = child(operator, "parameters", true);
      var found = list.$children.filter(function (p) { return p.id === name; })[0];
      if (value && found) {
        found.value = value;
      } else if (value) {
        var param = moddle.createAny("spiffworkflow:parameter", SPIFF, { id: name, type: "any", value: value });
        param.$parent = list;
        list.$children.push(param);
      } else if (found) {
        list.$children.splice(list.$children.indexOf(found), 1);
      }
      touch(element, bo);
    }
    if (!takes.length) { panel.appendChild(el("p", { "class": "hint" }, operator.id + " takes no parameters.")); }
    takes.forEach(function (parameter) {
      textField(parameter.name + (parameter.required ? " (required)" : ""), valueOf(parameter.name), function (v) {
        setParameter(parameter.name, v);
      }, parameter.hint, { "data-parameter": parameter.name });
    });
    var names = takes.map(function (p) { return p.name; });
    var strays = given.filter(function (p) { return names.indexOf(p.id) < 0; });
    if (strays.length) {
      var note = el("p", { "class": "studio-stale", role: "status" }, operator.id + " does not take " +
        strays.map(function (p) { return p.id; }).join(", ") + ". ");
      var drop = el("button", { type: "button" }, "Remove " + (strays.length > 1 ? "them" : "it"));
      drop.addEventListener("click", function () {
        strays.forEach(function (p) { setParameter(p.id, ""); });
        render();
      });
      note.appendChild(drop);
      panel.appendChild(note);
    }
  }

  function messageHolder(element) {
    return is(element, "bpmn:ReceiveTask") ? element.businessObject : eventDefinition(element, "bpmn:MessageEventDefinition");
  }

  function definitionsOf() { return modeler.getDefinitions(); }

  function messageFields(element) {
    var bo = element.businessObject;
    var holder = messageHolder(element);
    heading("Message");
    var messages = definitionsOf().rootElements.filter(function (r) { return r.$instanceOf("bpmn:Message"); });
    textField("Message name", holder.messageRef ? holder.messageRef.name : "", function (v) {
      var message = null;
      if (v) {
        message = messages.filter(function (m) { return m.name === v; })[0];
        if (!message) {
          message = moddle.create("bpmn:Message", { id: "Message_" + v.replace(/[^A-Za-z0-9_-]/g, "_"), name: v });
          message.$parent = definitionsOf();
          definitionsOf().rootElements.push(message);
        }
      }
      if (holder === bo) { modeling.updateProperties(element, { messageRef: message }); }
      else { modeling.updateModdleProperties(element, holder, { messageRef: message }); }
    }, "Sent through POST /api/v1/messages with this name.", { list: "studio-messages" });
    var list = document.getElementById("studio-messages") || document.body.appendChild(el("datalist", { id: "studio-messages" }));
    list.innerHTML = "";
    messages.forEach(function (m) { if (m.name) { list.appendChild(el("option", { value: m.name })); } });
    if (!is(element, "bpmn:ThrowEvent")) {
      selectField("Payload schema", getProperty(bo, "payloadSchema"), [["", "none"]].concat(options.payload_schemas),
        function (v) { setProperty(element, bo, "payloadSchema", v); }, "The JSON Schema every payload must satisfy.");
      textField("Store the payload as", getText(bo, "messageVariable"), function (v) {
        setText(element, bo, "messageVariable", v);
      }, "A process data key (default: the message name).");
    }
  }

  function parseDuration(text) {
    var m = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$/.exec(text || "");
    return m ? { d: m[1] || "", h: m[2] || "", m: m[3] || "" } : null;
  }

  function formatDuration(d, h, m) {
    var out = "P" + (d ? d + "D" : "");
    if (h || m) { out += "T" + (h ? h + "H" : "") + (m ? m + "M" : ""); }
    return out === "P" ? "" : out;
  }

  function timerFields(element) {
    var definition = eventDefinition(element, "bpmn:TimerEventDefinition");
    var current = definition.timeDuration ? definition.timeDuration.body : "";
    var other = definition.timeDate || definition.timeCycle;
    heading("Timer");
    var parts = parseDuration(current) || { d: "", h: "", m: "" };
    var wrap = el("fieldset", { "class": "studio-duration" });
    wrap.appendChild(el("legend", {}, "Waits for (duration)"));
    var inputs = {};
    [["d", "days"], ["h", "hours"], ["m", "minutes"]].forEach(function (unit) {
      var id = "studio-duration-" + unit[0];
      var input = el("input", { type: "number", min: "0", max: "9999", id: id, inputmode: "numeric" });
      input.value = parts[unit[0]];
      inputs[unit[0]] = input;
      var label = el("label", { "for": id }, unit[1]);
      wrap.appendChild(input);
      wrap.appendChild(label);
      input.addEventListener("change", function () {
        var value = formatDuration(inputs.d.value, inputs.h.value, inputs.m.value);
        var expression = value ? moddle.create("bpmn:FormalExpression", { body: value }) : undefined;
        modeling.updateModdleProperties(element, definition, { timeDuration: expression, timeDate: undefined, timeCycle: undefined });
        iso.textContent = value ? "ISO 8601: " + value : "";
      });
    });
    var iso = el("p", { "class": "hint", "data-testid": "studio-duration-iso" }, current ? "ISO 8601: " + current : "");
    wrap.appendChild(iso);
    if (other && !current) { wrap.appendChild(el("p", { "class": "hint" }, "Now a date or cycle: " + (other.body || "") + " (a duration replaces it).")); }
    panel.appendChild(wrap);
  }

  function flowFields(element) {
    var bo = element.businessObject;
    textField("Condition", bo.conditionExpression ? bo.conditionExpression.body : "", function (v) {
      modeling.updateProperties(element, {
        conditionExpression: v ? moddle.create("bpmn:FormalExpression", { body: v }) : undefined
      });
    }, "A Python expression on the process data (a gateway's outgoing flow), e.g. eligible == True.");
  }

  /* ---------- checks, pinned problems, the diff and deploy ---------- */

  function problemsOf(element) {
    var id = element.businessObject && element.businessObject.id;
    return lastProblems.filter(function (p) { return pinTarget(p) === (element.id || id); });
  }

  function pinTarget(problem) {
    var id = problem.element_id;
    if (id && registry.get(id)) { return id; }
    if (id) {
      var byBo = registry.filter(function (e) { return e.businessObject && e.businessObject.processRef && e.businessObject.processRef.id === id; })[0];
      if (byBo) { return byBo.id; }
    }
    return null;
  }

  var MARKERS = ["tether-problem", "tether-added", "tether-changed"];

  function clearMarks() {
    overlays.remove({ type: "tether-problem" });
    registry.forEach(function (e) { MARKERS.forEach(function (m) { canvas.removeMarker(e, m); }); });
  }

  function showProblems(problems) {
    var list = root.parentNode.querySelector("[data-studio-problems]");
    list.innerHTML = "";
    problems.forEach(function (p) {
      var target = pinTarget(p);
      var item = el("li", { "class": "studio-problem", "data-element": p.element_id || "" });
      item.appendChild(el("strong", {}, p.element_id ? p.element_id + (p.line ? " (line " + p.line + ")" : "") + ": " : ""));
      item.appendChild(document.createTextNode(p.message));
      if (target) {
        var show = el("button", { type: "button", "class": "studio-show" }, "Show");
        show.addEventListener("click", function () { selection.select(registry.get(target)); canvas.scrollToElement(registry.get(target)); });
        item.appendChild(document.createTextNode(" "));
        item.appendChild(show);
        canvas.addMarker(target, "tether-problem");
        var pin = el("span", { "class": "studio-pin", title: p.message, "data-testid": "studio-pin", "data-element": target }, "!");
        overlays.add(target, "tether-problem", { position: { top: -10, right: 10 }, html: pin });
      }
      list.appendChild(item);
    });
  }

  function showDiff(result) {
    var box = root.parentNode.querySelector("[data-studio-diff]");
    box.innerHTML = "";
    if (!result.ok) { return; }
    if (!result.current) {
      box.appendChild(el("p", {}, "A new process: deploying makes version 1 of " + result.key + "."));
      return;
    }
    var diff = result.diff;
    box.appendChild(el("p", {}, "Against the current version " + result.current.version + " of " + result.key + ":"));
    var facts = el("ul", { "class": "studio-diff" });
    [["added", "Added"], ["removed", "Removed"], ["changed", "Changed"]].forEach(function (pair) {
      var ids = diff[pair[0]];
      facts.appendChild(el("li", { "data-kind": pair[0] }, pair[1] + ": " + (ids.length ? ids.join(", ") : "nothing")));
      if (pair[0] !== "removed") {
        ids.forEach(function (id) { if (registry.get(id)) { canvas.addMarker(id, "tether-" + pair[0]); } });
      }
    });
    box.appendChild(facts);
    if (!diff.added.length && !diff.removed.length && !diff.changed.length) {
      box.appendChild(el("p", { "class": "muted" }, "No element changed (properties and forms may still differ)."));
    }
    if (result.current.active_therapies) {
      box.appendChild(el("p", {}, result.current.active_therapies + " therapies run on version " + result.current.version +
        ": they stay on it. After deploying, a dry run of their migration is offered."));
    }
  }

  function setDeploy(enabled, why) {
    var button = root.parentNode.querySelector("[data-studio-deploy]");
    button.disabled = !enabled;
    document.getElementById("deploy-why").textContent = why;
  }

  function check() {
    var seq = ++checkSeq;
    var status = root.parentNode.querySelector("[data-studio-status]");
    status.textContent = "Checking…";
    status.removeAttribute("data-state");
    setDeploy(false, "Checking the draft…");
    return xml().then(function (text) { return post(root.getAttribute("data-check-url"), { bpmn: text }); })
      .then(function (answer) {
        if (seq !== checkSeq) { return; }  // a newer change is being checked
        clearMarks();
        if (answer.status !== 200) {
          status.textContent = "The check could not run: " + ((answer.data.error || {}).message || answer.status);
          return;
        }
        var result = answer.data;
        lastProblems = result.problems;
        checkedOk = result.ok;
        showProblems(result.problems);
        showDiff(result);
        status.textContent = result.ok ? "No problems: every check of a deployment passes."
          : result.problems.length + (result.problems.length === 1 ? " problem." : " problems.");
        status.setAttribute("data-state", result.ok ? "ok" : "problems");
        setDeploy(result.ok, result.ok ? "Ready to deploy." : "Cannot deploy: " + result.problems[0].message);
        render();
      })
      .catch(function () { status.textContent = "The check could not run (network)."; });
  }

  function scheduleCheck() {
    window.clearTimeout(checkTimer);
    checkedOk = false;
    root.parentNode.querySelector("[data-studio-status]").removeAttribute("data-state");
    setDeploy(false, "Checking the draft…");
    checkTimer = window.setTimeout(check, 700);
  }

  // After a save: the draft's new version, or (409) who changed it since this page opened it.
  function saved(answer, where) {
    if (answer.data && answer.data.etag) { state.etag = answer.data.etag; }
    if (answer.status !== 409) { return false; }
    var error = answer.data.error || {};
    var by = (error.details || {}).updated_by;
    where.innerHTML = "";
    var note = el("span", { role: "alert", "class": "studio-stale", "data-testid": "studio-stale" },
      (by ? "Changed by " + by + " since you opened it: " : "Changed since you opened it: ") + "nothing was saved. ");
    note.appendChild(el("a", { href: window.location.pathname }, "Reload"));
    note.appendChild(document.createTextNode(" to see their change, then make yours again."));
    where.appendChild(note);
    return true;
  }

  function save() {
    var out = root.parentNode.querySelector("[data-studio-saved]");
    return xml().then(function (text) { return post(root.getAttribute("data-save-url"), { bpmn: text, etag: state.etag }); })
      .then(function (answer) {
        if (saved(answer, out)) { return; }
        out.textContent = answer.status === 200 ? "Saved." : "Not saved: " + ((answer.data.error || {}).message || answer.status);
      });
  }

  function deploy() {
    if (!checkedOk) { return; }
    var out = root.parentNode.querySelector("[data-studio-deployed]");
    setDeploy(false, "Deploying…");
    xml().then(function (text) { return post(root.getAttribute("data-deploy-url"), { bpmn: text, etag: state.etag }); })
      .then(function (answer) {
        out.innerHTML = "";
        if (saved(answer, out)) { return; }
        if (answer.status === 201 || answer.status === 200) {
          var r = answer.data;
          var p = el("p", { "class": "flash flash-success" });
          p.appendChild(document.createTextNode((r.created ? "Deployed " : "Already deployed (identical content): ") + r.key + " version " + r.version + ". "));
          p.appendChild(el("a", { href: r.url }, "View version " + r.version));
          out.appendChild(p);
          if (r.migrate_url) {
            var m = el("p");
            m.appendChild(document.createTextNode(r.active_therapies + " therapies run on the version before. "));
            m.appendChild(el("a", { href: r.migrate_url, "data-testid": "studio-migrate" }, "Dry-run their migration"));
            out.appendChild(m);
          }
          check();
        } else {
          var error = answer.data.error || {};
          out.appendChild(el("p", { "class": "flash flash-error", role: "alert" }, error.message || "Not deployed."));
          check();
        }
      });
  }

  root.parentNode.querySelector("[data-studio-save]").addEventListener("click", save);
  root.parentNode.querySelector("[data-studio-deploy]").addEventListener("click", deploy);

  function datalist(id, values) {
    var list = el("datalist", { id: id });
    values.forEach(function (v) { list.appendChild(el("option", { value: v })); });
    document.body.appendChild(list);
  }
  datalist("studio-phases", ["referral", "collection", "manufacturing", "release", "shipment", "infusion", "follow-up"]);
  datalist("studio-meanings", options.meanings);

  modeler.on("selection.changed", function (event) {
    current = event.newSelection.length === 1 ? event.newSelection[0] : null;
    render();
  });
  modeler.on("commandStack.changed", function () {
    root.parentNode.querySelector("[data-studio-saved]").textContent = "Changed, not saved.";
    scheduleCheck();
  });
  modeler.on("elements.changed", function (event) {
    if (current && panel.contains(document.activeElement)) { return; }  // do not redraw under the typing hand
    if (current && event.elements.indexOf(current) >= 0) { render(); }
  });

  // A diagram without a layout (no BPMN DI: written by hand or generated) is laid out first (bpmn-auto-layout).
  function laidOut(text) {
    var layoutUrl = root.getAttribute("data-layout-url");
    if (/BPMNShape/.test(text) || !layoutUrl) { return Promise.resolve(text); }
    return import(layoutUrl).then(function (module) { return module.layoutProcess(text); }).then(function (result) {
      var note = root.parentNode.querySelector("[data-studio-layout]");
      note.hidden = false;
      return result;
    });
  }

  laidOut(initialXml).then(function (text) { return modeler.importXML(text); }).then(function () {
    canvas.zoom("fit-viewport", "auto");
    if (canvas.zoom() > 1) { canvas.zoom(1); }
    render();
    root.setAttribute("data-rendered", "true");
    check();
  }).catch(function (error) {
    root.setAttribute("data-rendered", "error");
    panel.textContent = /no diagram to display/.test(error.message)
      ? "This diagram has no layout (no BPMN DI): the studio can only open diagrams drawn in a modeler."
      : "The draft could not be drawn: " + error.message;
  });
  window.tetherStudio = {
    modeler: modeler, check: check, render: render, state: state, options: options, saved: saved, post: post,
    panel: panel,
    onPanel: function (hook) { hooks.push(hook); },
    is: is, el: el, field: field, textField: textField, heading: heading, getText: getText, setText: setText
  };
})();
