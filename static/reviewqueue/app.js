/* reviewqueue: keyboard shortcuts, panels, lease clock, screenshot point, lightbox.
   Loaded from our own static files (the Content-Security-Policy forbids inline scripts). */
(function () {
  "use strict";

  /* True while a verdict is on its way: keys pressed meanwhile are dropped, never queued. */
  var busy = false;
  function setBusy(value) {
    busy = value;
    document.body.classList.toggle("busy", value);
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt && event.detail.elt.id === "verdict-form") setBusy(true);
  });
  /* The form that sent the request is replaced by the answer, so its own afterRequest event never
     reaches the document. The busy state ends when the next item has settled (htmx has wired up
     its form), or when the request failed. */
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.target && event.detail.target.id === "workbench") setBusy(false);
  });
  ["htmx:responseError", "htmx:sendError", "htmx:timeout", "htmx:swapError"].forEach(function (name) {
    document.addEventListener(name, function () { setBusy(false); });
  });

  function verdictForm() { return document.getElementById("verdict-form"); }
  function panel(name) { return document.querySelector('[data-panel="' + name + '"]'); }
  function verdictButton(verdict) {
    var form = verdictForm();
    return form && form.querySelector('button[name="verdict"][value="' + verdict + '"]');
  }
  function isTextField(el) {
    if (!el || !el.closest) return false;
    if (el.closest("textarea, select, [contenteditable]")) return true;
    var input = el.closest("input");
    return !!input && ["radio", "checkbox", "button", "submit", "reset"].indexOf(input.type) === -1;
  }

  function openPanel(name) {
    var box = panel(name);
    if (!box) return;
    box.hidden = false;
    if (name === "correct") verdictForm().classList.add("correcting");
    var field = box.querySelector("textarea");
    if (field) {
      field.focus();
      if (name === "correct") field.setSelectionRange(field.value.length, field.value.length);
    }
  }

  /* Correct and Reject open their panel on the first press and submit on the next. */
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-opens]");
    if (!button) return;
    var box = panel(button.dataset.opens);
    if (!box) return;
    if (box.hidden) {
      event.preventDefault();
      openPanel(button.dataset.opens);
      return;
    }
    if (button.dataset.opens === "reject") {
      var reason = box.querySelector("textarea");
      if (reason && !reason.value.trim()) {
        event.preventDefault();
        reason.focus();
        box.classList.add("needs-input");
      }
    }
  }, true);

  function toggleShortcuts() {
    var dialog = document.getElementById("shortcuts");
    if (!dialog) return;
    if (dialog.open) dialog.close(); else dialog.showModal();
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-shortcuts-toggle]")) toggleShortcuts();
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      var field = target.closest && target.closest("[data-submit]");
      if (field) {
        event.preventDefault();
        var button = verdictButton(field.dataset.submit);
        if (button) button.click();
      }
      return;
    }
    if (isTextField(target)) {
      if (event.key === "Escape") {
        target.blur();
        var item = document.getElementById("item");
        if (item) item.focus();
      } else if (event.key === "Enter" && target.tagName === "INPUT" && target.form && target.form.id === "verdict-form") {
        event.preventDefault(); /* never an implicit submit: the form's first button is Approve */
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (document.querySelector("dialog[open]") && event.key !== "?") return;
    if (event.key === "?") {
      event.preventDefault();
      toggleShortcuts();
      return;
    }
    var form = verdictForm();
    if (!form || busy) return;
    var key = event.key.length === 1 ? event.key.toLowerCase() : "";
    var shortcut = key && form.querySelector('button[data-key="' + key + '"]');
    if (shortcut) {
      event.preventDefault();
      shortcut.click();
    }
  });

  /* The lease clock: counts down from the server's figure; the heartbeat replaces it. */
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-seconds-left]").forEach(function (el) {
      if (!el.dataset.deadline) el.dataset.deadline = String(now + Number(el.dataset.secondsLeft) * 1000);
      var left = Math.max(0, Math.round((Number(el.dataset.deadline) - now) / 1000));
      var clock = el.querySelector(".lease-clock");
      if (!clock) return;
      if (left === 0) {
        clock.textContent = "expired";
        el.classList.add("lost");
      } else {
        clock.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
      }
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);

  /* After a verdict: the next item, scrolled to the top, focused so the keys work at once. */
  document.addEventListener("htmx:afterSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "workbench") return;
    var workbench = document.getElementById("workbench");
    if (!workbench) return;
    tick();
    window.scrollTo(0, 0);
    var open = workbench.querySelector(".panel:not([hidden]) textarea");
    var item = document.getElementById("item");
    if (open) open.focus();
    else if (item) item.focus({ preventScroll: true });
  });

  function showProblem(text) {
    var workbench = document.getElementById("workbench");
    if (!workbench) return;
    var flash = document.createElement("div");
    flash.className = "flash error";
    flash.setAttribute("role", "alert");
    flash.textContent = text;
    var strip = workbench.querySelector(".strip");
    workbench.insertBefore(flash, strip ? strip.nextSibling : workbench.firstChild);
  }
  document.addEventListener("htmx:responseError", function (event) {
    showProblem("The server could not handle that (" + event.detail.xhr.status + "). Nothing was lost; try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    showProblem("The server cannot be reached. Check your connection and try again.");
  });

  /* Screenshots: while correcting, a click moves the proposed point (in image pixels). */
  function setPoint(value, x, y, depth) {
    if (!value || typeof value !== "object" || depth > 4) return false;
    if (typeof value.x === "number" && typeof value.y === "number") { value.x = x; value.y = y; return true; }
    var key = ["coordinate", "coordinates", "point"].find(function (k) { return Array.isArray(value[k]) && value[k].length === 2; });
    if (key) { value[key] = [x, y]; return true; }
    if (Array.isArray(value.tool_calls)) {
      return value.tool_calls.some(function (call) {
        return call && call.function && setPoint(call.function.arguments, x, y, depth + 1);
      });
    }
    return false;
  }
  document.addEventListener("click", function (event) {
    var svg = event.target.closest && event.target.closest("svg[data-screen]");
    if (!svg) return;
    var form = svg.closest("form");
    var editor = form && form.querySelector("#corrected-output");
    if (!editor || !form.classList.contains("correcting")) return;
    var point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    var p = point.matrixTransform(svg.getScreenCTM().inverse());
    var x = Math.round(p.x), y = Math.round(p.y);
    var value;
    try { value = JSON.parse(editor.value); } catch (e) { editor.focus(); return; }
    if (!setPoint(value, x, y, 0)) return;
    editor.value = JSON.stringify(value, null, 2);
    editor.dispatchEvent(new Event("input", { bubbles: true }));
    svg.querySelectorAll("[data-marker]").forEach(function (c) { c.setAttribute("cx", x); c.setAttribute("cy", y); });
    var label = form.querySelector("[data-marker-label]");
    if (label) label.textContent = "(" + x + ", " + y + ")";
  });

  /* Thumbnails open large in a dialog (the link still works without this script). */
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-lightbox]");
    var dialog = document.getElementById("lightbox");
    if (!link || !dialog || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    var img = dialog.querySelector("img");
    img.src = link.href;
    img.alt = link.querySelector("img") ? link.querySelector("img").alt : "";
    dialog.showModal();
  });
})();
