// A page of image details in a large report: Escape goes back to the page it was opened from
// (the matrix), or to the report's first page when the page was opened on its own.
(function () {
  "use strict";

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    event.preventDefault();
    if (history.length > 1) history.back();
    else location.href = document.querySelector("a[data-home]").href + "#matrix";
  });
})();
