/* Tether's pages: form checks before sending, barcode scans, rows of arrays, local time zones, clocks.
   Plain JavaScript; every page works without it, the server checks everything again. */
(function () {
  "use strict";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function zoneName() {
    var offset = -new Date().getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "-";
    offset = Math.abs(offset);
    return "UTC" + sign + pad(Math.floor(offset / 60)) + ":" + pad(offset % 60);
  }

  function setTimeZone(root) {
    root.querySelectorAll("[data-tz-offset]").forEach(function (input) {
      input.value = String(new Date().getTimezoneOffset());
    });
    root.querySelectorAll("[data-tz-note]").forEach(function (note) {
      note.textContent = "(your local time, " + zoneName() + ")";
    });
  }

  /* ---- COI scans: a scanner types fast and ends with Enter; Enter moves on instead of sending. ---- */
  function normaliseCoi(text) {
    var value = (text || "").toUpperCase().replace(/\s+/g, "");
    if (value.indexOf("&/") === 0) { value = value.slice(2); }
    return value;
  }

  function showScanStatus(input, form) {
    var status = input.parentNode.querySelector("[data-scan-status]");
    if (!status) { return; }
    var expected = form.getAttribute("data-expected-coi") || "";
    var expectedCheck = normaliseCoi(form.getAttribute("data-expected-check") || "");
    var value = normaliseCoi(input.value);
    status.className = "scan-status";
    if (!value || !expected) { status.textContent = ""; return; }
    var matches = value === expected || value === expectedCheck;
    if (value.length < 15) { status.textContent = ""; return; }
    status.textContent = matches ? "✓ Matches this therapy's COI." :
      "✗ Does not match this therapy's COI. Check the bag before going on.";
    status.classList.add(matches ? "match" : "mismatch");
  }

  function focusables(form) {
    return Array.prototype.filter.call(
      form.querySelectorAll("input:not([type=hidden]), select, textarea, button"),
      function (el) { return !el.disabled && el.offsetParent !== null; });
  }

  function focusNext(input) {
    var list = focusables(input.form);
    var at = list.indexOf(input);
    var next = list[at + 1];
    while (next && next.type === "radio" && next.name && list[at] && list[at].name === next.name) {
      at += 1; next = list[at + 1];
    }
    if (next) { next.focus(); }
  }

  function bindScans(form) {
    form.querySelectorAll("[data-scan]").forEach(function (input) {
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter") {
          event.preventDefault();
          input.value = input.value.trim();
          showScanStatus(input, form);
          focusNext(input);
        }
      });
      input.addEventListener("input", function () { showScanStatus(input, form); });
      showScanStatus(input, form);
    });
  }

  /* ---- Checks before sending, with the messages next to their fields. ---- */
  function messageFor(el) {
    var v = el.validity;
    if (el.name === "signature_meaning" && v.valueMissing) { return "Confirm the meaning of your signature."; }
    if (el.name === "signature_password" && v.valueMissing) { return "Enter your password to sign."; }
    if (v.valueMissing) {
      if (el.type === "checkbox") { return "Tick this box to confirm."; }
      if (el.type === "radio") { return "Choose one of the options."; }
      return "This field is required.";
    }
    if (v.badInput) { return el.type === "number" ? "Enter a number." : "Enter a valid value."; }
    if (v.rangeUnderflow) { return "Must be at least " + el.min + "."; }
    if (v.rangeOverflow) { return "Must be at most " + el.max + "."; }
    if (v.stepMismatch) { return el.step === "1" ? "Enter a whole number." : "Enter a multiple of " + el.step + "."; }
    if (v.tooShort) { return "Enter at least " + el.minLength + " characters."; }
    if (v.tooLong) { return "Enter at most " + el.maxLength + " characters."; }
    if (v.patternMismatch) { return "This does not have the expected format."; }
    if (v.typeMismatch) { return "Enter a valid value."; }
    return el.validationMessage || "";
  }

  function errorBox(el) {
    var holder = el.closest("[data-field]") || el.closest("fieldset") || el.parentNode;
    if (el.name === "signature_password" || el.name === "signature_meaning") {
      return { holder: el.closest("fieldset"), box: document.getElementById("signature-error") };
    }
    return { holder: holder, box: holder ? holder.querySelector("[data-error-for]") : null };
  }

  function setError(el, message, append) {
    var found = errorBox(el);
    var text = message;
    if (found.box) {
      text = append && found.box.textContent && message ? found.box.textContent + " " + message : message;
      if (append && !message) { text = found.box.textContent; }
      found.box.textContent = text;
      found.box.hidden = !text;
    }
    if (found.holder) { found.holder.classList.toggle("has-error", !!text); }
    if (message) { el.setAttribute("aria-invalid", "true"); } else { el.removeAttribute("aria-invalid"); }
  }

  function checkForm(form) {
    var firstBad = null;
    var count = 0;
    var seenRadio = {};
    form.querySelectorAll("input, select, textarea").forEach(function (el) {
      if (el.type === "hidden" || el.disabled || el.closest("template")) { return; }
      if (el.type === "radio") {
        if (seenRadio[el.name]) { return; }
        seenRadio[el.name] = true;
      }
      var message = el.checkValidity() ? "" : messageFor(el);
      var signing = el.name === "signature_password";  // shares one message line with the meaning
      setError(el, message, signing);
      if (message) {
        count += 1;
        if (!firstBad) { firstBad = el; }
      }
    });
    var summary = form.parentNode.querySelector("#form-errors");
    if (count) {
      if (!summary) {
        summary = document.createElement("div");
        summary.id = "form-errors";
        summary.className = "form-errors";
        summary.setAttribute("role", "alert");
        summary.tabIndex = -1;
        form.parentNode.insertBefore(summary, form);
      }
      summary.textContent = count === 1 ? "One answer needs correcting; see the marked field." :
        count + " answers need correcting; see the marked fields.";
      firstBad.focus();
    } else if (summary) {
      summary.remove();
    }
    return count === 0;
  }

  function bindChecks(form) {
    form.addEventListener("submit", function (event) {
      if (!checkForm(form)) { event.preventDefault(); return; }
      var button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; button.textContent = "Sending…"; }
    });
    form.addEventListener("change", function (event) {
      var el = event.target;
      if (el.getAttribute("aria-invalid") === "true" && el.checkValidity()) { setError(el, ""); }
    });
  }

  /* ---- Arrays drawn as rows ---- */
  function bindRows(form) {
    form.querySelectorAll("[data-rows-name]").forEach(function (group) {
      var list = group.querySelector("[data-rows]");
      var template = group.querySelector("template[data-row-template]");
      var name = group.getAttribute("data-rows-name");
      function nextIndex() {
        var max = -1;
        list.querySelectorAll("[name^='" + name + ".']").forEach(function (el) {
          var rest = el.name.slice(name.length + 1).split(".")[0];
          if (/^\d+$/.test(rest)) { max = Math.max(max, parseInt(rest, 10)); }
        });
        return max + 1;
      }
      var add = group.querySelector("[data-add-row]");
      if (add && template) {
        add.addEventListener("click", function () {
          var limit = parseInt(group.getAttribute("data-max-items") || "0", 10);
          if (limit && list.children.length >= limit) { return; }
          var index = nextIndex();
          var html = template.innerHTML.split("__index__").join(String(index));
          list.insertAdjacentHTML("beforeend", html);
          var row = list.lastElementChild;
          var first = row.querySelector("input, select, textarea");
          if (first) { first.focus(); }
        });
      }
      group.addEventListener("click", function (event) {
        var button = event.target.closest("[data-remove-row]");
        if (!button) { return; }
        var minimum = parseInt(group.getAttribute("data-min-items") || "0", 10);
        if (list.children.length <= Math.max(minimum, 0)) { return; }
        button.closest("[data-row]").remove();
        if (add) { add.focus(); }
      });
    });
  }

  /* ---- A running vein-to-vein clock ---- */
  function span(ms) {
    var minutes = Math.floor(Math.abs(ms) / 60000);
    var days = Math.floor(minutes / 1440), hours = Math.floor((minutes % 1440) / 60), mins = minutes % 60;
    if (days) { return days + " d " + hours + " h"; }
    if (hours) { return hours + " h " + mins + " min"; }
    return mins + " min";
  }

  function tickClocks() {
    document.querySelectorAll("[data-clock-since]").forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-clock-since"));
      if (!isNaN(since)) { el.textContent = span(Date.now() - since) + " and running"; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setTimeZone(document);
    document.querySelectorAll("form[data-task-form]").forEach(function (form) {
      bindScans(form);
      bindChecks(form);
      bindRows(form);
    });
    var summary = document.querySelector("#form-errors, #upload-error");
    if (summary) {
      var firstInvalid = document.querySelector("[aria-invalid=true]");
      (firstInvalid || summary).focus();
    }
    if (document.querySelector("[data-clock-since]")) { setInterval(tickClocks, 30000); }
  });
}());
