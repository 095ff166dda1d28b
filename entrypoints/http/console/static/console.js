// The Waypost console's own script: the live tail, the schema editor's check, confirmations.
// Everything it shows is set as text (never as HTML), and it runs under a CSP without
// 'unsafe-inline' or 'unsafe-eval'.
(function () {
  "use strict";

  function text(tag, value, className) {
    var node = document.createElement(tag);
    node.textContent = value;
    if (className) node.className = className;
    return node;
  }

  // --- confirmations on destructive forms (data-confirm) ---
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // --- a new API key: select it when focused, to copy ---
  document.querySelectorAll("[data-select-on-focus]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });

  // --- the schema editor: say at once whether the text is a JSON object ---
  document.querySelectorAll("textarea[data-json-editor]").forEach(function (area) {
    var status = document.getElementById(area.getAttribute("data-json-editor"));
    var initial = status.textContent;
    function check() {
      try {
        var value = JSON.parse(area.value);
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
          status.textContent = "/schema must be a JSON object.";
          area.setAttribute("aria-invalid", "true");
          return;
        }
        status.textContent = initial;
        area.removeAttribute("aria-invalid");
      } catch (error) {
        status.textContent = "/schema is not JSON: " + error.message;
        area.setAttribute("aria-invalid", "true");
      }
    }
    area.addEventListener("input", check);
  });

  // --- the live tail ---
  var table = document.getElementById("live");
  if (!table || !window.EventSource) return;
  var body = table.querySelector("tbody");
  var status = document.getElementById("live-status");
  var base = table.getAttribute("data-base");
  var MAX_ROWS = 500;

  function about(message) {
    var parts = [];
    if (message.eventname) {
      parts.push(message.eventname + " " + (message.eventversion || "") + "-" + (message.release || "") +
        " " + (message.platformid || "") + " " + (message.package || ""));
    }
    if (message.success !== undefined) parts.push(String(message.success) === "true" ? "success" : "failure");
    return parts.join(" · ");
  }

  function artifactLink(message) {
    if (!message.eventname) return null;
    var query = new URLSearchParams({
      name: message.eventname, version: message.eventversion || "", release: message.release || "",
      platform_id: message.platformid || "", package: message.package || ""
    });
    return base + "/artifacts?" + query.toString();
  }

  function show(message) {
    var row = document.createElement("tr");
    var time = text("td", "");
    var stamp = text("time", (message.time || "").replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC"));
    stamp.setAttribute("datetime", message.time || "");
    time.appendChild(stamp);
    row.appendChild(time);
    row.appendChild(text("td", message.type || ""));
    row.appendChild(text("td", message.subject || "", "mono"));
    var cell = document.createElement("td");
    var href = artifactLink(message);
    if (href) {
      var link = text("a", about(message));
      link.href = href;
      cell.appendChild(link);
    } else {
      cell.textContent = about(message);
    }
    row.appendChild(cell);
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  }

  var source = new EventSource(table.getAttribute("data-stream"));
  source.addEventListener("ready", function () {
    status.textContent = "Connected: new messages appear at the top.";
  });
  source.onmessage = function (event) {
    try { show(JSON.parse(event.data)); } catch (error) { /* not a message: ignore */ }
  };
  source.onerror = function () {
    status.textContent = source.readyState === EventSource.CLOSED
      ? "Disconnected: reload the page (you may need to sign in again)."
      : "Reconnecting…";
  };
})();
