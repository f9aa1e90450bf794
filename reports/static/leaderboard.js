// The method leaderboard: click a column heading to sort its rows (again to reverse).
// Numbers sort best first on the first click (lower or higher, as the column says);
// rows without a value stay at the bottom either way. Check boxes show or hide each category's columns.
(function () {
  "use strict";

  function sortBy(table, index, header) {
    const numeric = header.dataset.sort === "number";
    const ascending = header.getAttribute("aria-sort") === "none"
      ? (numeric ? header.dataset.better !== "higher" : true)
      : header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach((th) => { if (th.hasAttribute("aria-sort")) th.setAttribute("aria-sort", "none"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = [...body.rows];
    const key = (row) => row.cells[index].dataset.value;
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === "" || y === "") return (x === "") - (y === "");  // missing values last
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    body.replaceChildren(...rows);
  }

  function setup(table) {
    table.querySelectorAll("thead th[data-sort]").forEach((header) => {
      const index = [...header.parentNode.children].indexOf(header);
      header.querySelector("button").addEventListener("click", () => sortBy(table, index, header));
    });
  }

  // The category check boxes: a category unticked hides its columns, its header and its legend entries.
  function groups(fieldset) {
    const section = fieldset.closest("section");
    fieldset.addEventListener("change", (event) => {
      const box = event.target;
      section.querySelectorAll(`[data-group="${box.value}"]`).forEach((cell) => cell.classList.toggle("group-hidden", !box.checked));
    });
  }

  function start() {
    document.querySelectorAll("table[data-leaderboard]").forEach(setup);
    document.querySelectorAll("[data-leaderboard-groups]").forEach(groups);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
