// Live updates without reloading: an element with data-live="URL" has its
// contents replaced by what URL answers, every 2 seconds, while the page is
// visible. Pages work without this script (reload to refresh).
(function () {
  "use strict";
  function refresh(el) {
    if (document.hidden) { return; }
    fetch(el.getAttribute("data-live"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) { if (text !== null) { el.innerHTML = text; } })
      .catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      setInterval(function () { refresh(el); }, 2000);
    });
  });
})();
