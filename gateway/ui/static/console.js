// cairn console: the one bit of script. Pages whose body has data-live="MS" (something runs)
// fetch themselves every MS milliseconds and swap in the parts marked data-live-id, so
// progress moves without a reload; they stop once the page says nothing runs any more.
// Without script the pages work the same, and a reload shows the news.
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-live") || "0", 10);
  if (!every || !window.fetch || !window.DOMParser) {
    return;
  }
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (!resp.ok) { throw new Error(resp.status); }
        return resp.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live-id]").forEach(function (el) {
          var fresh = doc.querySelector('[data-live-id="' + el.getAttribute("data-live-id") + '"]');
          if (fresh && !el.contains(document.activeElement)) {
            el.replaceWith(document.importNode(fresh, true));
          }
        });
        if (doc.body.hasAttribute("data-live")) {
          window.setTimeout(refresh, every);
        } else {
          body.removeAttribute("data-live");
        }
      })
      .catch(function () { window.setTimeout(refresh, every * 3); });
  }
  window.setTimeout(refresh, every);
})();
