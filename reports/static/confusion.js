// Class confusion: a click on a count sets the matrix's class filters to that pair (and, with several
// models, to that model's predictions) and shows the matrix.
(function () {
  "use strict";

  function choose(select, value) {
    if (!select) return;
    select.value = value;
    select.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function show(button) {
    const matrix = document.querySelector("[data-matrix]");
    if (!matrix) return;
    const table = button.closest("[data-confusion]");
    choose(matrix.querySelector("select[data-filter=model]"), table.dataset.model);
    choose(matrix.querySelector("select[data-filter=outcome]"), "");
    choose(matrix.querySelector("select[data-filter=failed]"), "");
    choose(matrix.querySelector("select[data-filter=truth]"), button.dataset.truth);
    choose(matrix.querySelector("select[data-filter=predicted]"), button.dataset.predicted);
    matrix.scrollIntoView();
  }

  function start() {
    document.querySelectorAll("[data-confusion] button[data-truth]").forEach((button) => {
      button.addEventListener("click", () => show(button));
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
