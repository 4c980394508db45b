/* The digest page, live: polls the JSON named by data-progress-url every data-interval seconds
 * while the digest can still change, and fills in the elements marked data-field. Elements with
 * data-states="sending paused" show only in those states. The page reads the same without it.
 * Also: forms with data-confirm ask first, and [data-browser-zone] gets the browser's time zone. */
(function () {
  "use strict";
  var LIVE = ["draft", "scheduled", "sending", "paused"];
  var MAX_FAILURES = 5;

  function render(root, s) {
    root.querySelectorAll("[data-field]").forEach(function (node) {
      var value = s[node.getAttribute("data-field")];
      if (value === undefined || value === null) return;
      node.textContent = typeof value === "number" ? value.toLocaleString("en-US") : value;
    });
    var bar = root.querySelector("progress");
    if (bar) {
      bar.max = Math.max(s.total, 1);
      bar.value = s.finished;
      bar.textContent = s.finished + " of " + s.total;
    }
    document.querySelectorAll("[data-states]").forEach(function (node) {
      node.hidden = node.getAttribute("data-states").split(" ").indexOf(s.status) < 0;
    });
    root.setAttribute("data-status", s.status);
  }

  function watch(root) {
    var url = root.getAttribute("data-progress-url");
    var interval = (Number(root.getAttribute("data-interval")) || 1) * 1000;
    var note = root.querySelector("[data-live]");
    var failures = 0;

    function say(text) {
      if (!note) return;
      note.textContent = text;
      note.hidden = !text;
    }

    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          var type = response.headers.get("Content-Type") || "";
          if (!response.ok || type.indexOf("application/json") < 0) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (s) {
          failures = 0;
          say("");
          render(root, s);
          if (LIVE.indexOf(s.status) >= 0) window.setTimeout(poll, interval);
        })
        .catch(function () {
          failures += 1;
          if (failures >= MAX_FAILURES) {
            say("Live updates stopped (are you still logged in?). Reload the page to see the latest numbers.");
            return;
          }
          say("Could not reach the server; trying again…");
          window.setTimeout(poll, interval * 2 * failures);
        });
    }

    if (LIVE.indexOf(root.getAttribute("data-status")) >= 0) window.setTimeout(poll, interval);
  }

  document.querySelectorAll("[data-progress-url]").forEach(watch);

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  var zone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone) {
    document.querySelectorAll("input[data-browser-zone]").forEach(function (input) { input.value = zone; });
  }
})();
