// Semantic dictionaries: clicking a grid position over the picture shows that
// position's strongest units, each as its thumbnail sized by its activation.
// The data sits in a JSON script block beside each dictionary; everything is
// inserted with DOM calls and textContent, never as HTML.
(function () {
  "use strict";

  function format(value) {
    return Number(value.toPrecision(4)).toString();
  }

  function unitFigure(data, unit) {
    const figure = document.createElement("figure");
    figure.className = "unit";
    const source = data.thumbnails[String(unit.unit)];
    // A unit whose picture the render budget left for later: an empty box of the same size.
    const image = document.createElement(source === undefined ? "span" : "img");
    if (source === undefined) {
      image.className = "pending";
      image.title = "picture not rendered yet (render budget)";
      image.textContent = "not rendered";
    } else {
      image.src = window.nnvisPicture(source);
      image.alt = data.unit_label + " " + unit.unit;
    }
    image.style.width = unit.size + "px";
    image.style.height = unit.size + "px";
    const caption = document.createElement("figcaption");
    caption.textContent = data.unit_label + " " + unit.unit + ": " + format(unit.activation);
    figure.append(image, caption);
    return figure;
  }

  function show(root, data, index) {
    const row = Math.floor(index / data.columns), column = index % data.columns;
    const where = document.createElement("p");
    where.className = "dictionary-where";
    where.textContent = "row " + row + ", column " + column + (data.cells[index].length ? "" : ": no active " + data.unit_label);
    root.querySelector(".dictionary-entry").replaceChildren(where, ...data.cells[index].map((u) => unitFigure(data, u)));
    root.querySelectorAll("button[data-cell]").forEach((button) => {
      const selected = Number(button.dataset.cell) === index;
      button.classList.toggle("selected", selected);
      button.setAttribute("aria-pressed", selected ? "true" : "false");
    });
  }

  function setup(root) {
    const data = JSON.parse(root.querySelector("script.dictionary-data").textContent);
    root.querySelectorAll("button[data-cell]").forEach((button) => {
      button.addEventListener("click", () => show(root, data, Number(button.dataset.cell)));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-dictionary]").forEach(setup);
  });
})();
