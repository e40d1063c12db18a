// Applies the theme chosen with the toggle before the page paints (a
// separate file: the Content-Security-Policy forbids inline scripts).
// Without a choice, the stylesheet follows prefers-color-scheme.
(function () {
  try {
    var t = localStorage.getItem("qrun.theme");
    if (t === "dark" || t === "light") document.documentElement.dataset.theme = t;
  } catch (e) { /* storage disabled: follow the system */ }
})();
