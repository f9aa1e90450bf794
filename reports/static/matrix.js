// The method x image matrix: one row per image, one column per heatmap method (of each model, when
// the report compares several), built from the JSON data island of matrix.html.j2. Rows are added a page at a time as the matrix scrolls, so
// a report of thousands of images does not create thousands of pictures at load. Every name
// reaches the page through textContent or setAttribute, never as HTML.
(function () {
  "use strict";

  const PAGE = 50;  // rows added at a time
  const STEPS = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function percent(p) { return (100 * p).toFixed(1) + "%"; }
  function number(v) { return Number(v.toPrecision(3)).toString(); }

  // --- the data ------------------------------------------------------------------------------

  // Plugins whose first picture is a heatmap (attribution methods even where every call failed),
  // attribution methods first.
  function methodColumns(data) {
    const drawsMaps = (i) => data.maps[i];
    const columns = data.plugins
      .map((name, i) => ({ i: i, name: name, title: data.titles[i], attribution: data.attribution[i] }))
      .filter((column) => column.attribution || drawsMaps(column.i));
    return columns.filter((c) => c.attribution).concat(columns.filter((c) => !c.attribution));
  }

  // What model `model` said of an image, and the image's true class in that model's classes.
  function said(image, model) { return image.said[model] || null; }
  function truth(image, model) { return image.truths[model] || null; }

  function outcome(image, model) {
    const predicted = said(image, model), known = truth(image, model);
    if (!known || !predicted) return "unknown";
    return predicted.index === known.index ? "correct" : "wrong";
  }

  // Whether the models' top classes (by name) differ.
  function disagree(image) {
    return new Set(image.said.map((entry) => (entry ? entry.name : null))).size > 1;
  }

  function hasFailure(image, columns) {
    return columns.some((c) => image.cells[c.i] && image.cells[c.i].status === "error");
  }

  // A map that shows nothing (zero or constant everywhere), though its call succeeded.
  function hasBlank(image, columns) {
    return columns.some((c) => image.cells[c.i] && image.cells[c.i].degenerate);
  }

  function methodsMatch(image, columns, wanted) {
    if (wanted === "failed") return hasFailure(image, columns);
    if (wanted === "clean") return !hasFailure(image, columns);
    if (wanted === "blank") return hasBlank(image, columns);
    return true;
  }

  // A method's metric on one image, or null where the call failed or did not report it.
  function metricValue(image, column, metric) {
    const cell = image.cells[column.i];
    const value = cell && cell.status === "ok" ? cell.metrics[metric] : undefined;
    return typeof value === "number" ? value : null;
  }

  function metricNames(data, column) {
    const names = new Set();
    data.images.forEach((image) => {
      const cell = image.cells[column.i];
      if (cell && cell.status === "ok") Object.keys(cell.metrics).forEach((name) => names.add(name));
    });
    return [...names].sort();
  }

  // The orders the sort list offers after file order: lowest confidence, then every (method,
  // metric) pair both ways, the worse end first. The label says which end comes first, and
  // whether it is the worse one where the leaderboard knows the metric's better direction.
  function sortKeys(data, columns) {
    const better = {};
    data.better.keys.forEach((key, i) => { better[key] = data.better.directions[i]; });
    const keys = data.models.map((name, model) => ({
      label: "lowest confidence first" + (data.models.length > 1 ? " (" + name + ")" : ""), descending: false,
      value: (image) => (said(image, model) ? said(image, model).probability : null) }));
    columns.forEach((column) => metricNames(data, column).forEach((metric) => {
      const worstIsHigh = better[metric] !== "higher";  // highest first too where the direction is unknown
      for (const descending of [worstIsHigh, !worstIsHigh]) {
        const end = descending ? "highest" : "lowest";
        const worst = (better[metric] === "lower") === descending;
        const order = better[metric] ? (worst ? "worst" : "best") + " (" + end + ") first" : end + " first";
        keys.push({ label: column.title + ": " + metric + ", " + order, descending: descending,
          column: column, metric: metric, value: (image) => metricValue(image, column, metric) });
      }
    }));
    return keys;
  }

  // --- filtering and sorting -----------------------------------------------------------------

  function classValue(entry) { return entry ? String(entry.index) : "none"; }

  // The class filters and the outcome read the predictions of the model the "predictions of" list
  // names (the first model when there is one).
  function matches(image, filters, columns) {
    const model = Number(filters.model || 0);
    return (!filters.truth || classValue(truth(image, model)) === filters.truth)
      && (!filters.predicted || classValue(said(image, model)) === filters.predicted)
      && (!filters.outcome || outcome(image, model) === filters.outcome)
      && (!filters.agreement || disagree(image) === (filters.agreement === "disagree"))
      && (!filters.search || image.path.toLowerCase().includes(filters.search.toLowerCase()))
      && methodsMatch(image, columns, filters.failed);
  }

  // Images without a value (the method failed, or never reported it) go last either way; ties
  // keep file order.
  function sortImages(images, key) {
    if (!key) return images;
    const entries = images.map((image, position) => ({ image: image, position: position, value: key.value(image) }));
    entries.sort((a, b) => {
      const missing = (a.value === null) - (b.value === null);
      const order = missing || a.value === b.value ? missing : (key.descending ? b.value - a.value : a.value - b.value);
      return order || a.position - b.position;
    });
    return entries.map((entry) => entry.image);
  }

  // --- the controls --------------------------------------------------------------------------

  function addOptions(select, options) {
    options.forEach(([value, text]) => {
      const option = element("option", "", text);
      option.value = value;
      select.append(option);
    });
  }

  // The classes that occur in one field (truths or said) for any model, by name, then "unknown"
  // if some image has none.
  function classOptions(images, field) {
    const names = new Map();
    images.forEach((image) => image[field].forEach((entry) => {
      if (entry && !names.has(classValue(entry))) names.set(classValue(entry), entry.name);
    }));
    const options = [...names].sort((a, b) => a[1].localeCompare(b[1]));
    if (images.some((image) => image[field].some((entry) => !entry))) options.push(["none", "unknown"]);
    return options;
  }

  // The class and sort lists from the rows known so far (again when more rows arrive), keeping the choices made.
  function fillOptions(view) {
    const root = view.root;
    const lists = [["[data-filter=truth]", classOptions(view.data.images, "truths")],
      ["[data-filter=predicted]", classOptions(view.data.images, "said")],
      [".matrix-sort", [["file", "file order"]].concat(view.sortKeys.map((key, i) => [String(i), key.label]))]];
    lists.forEach(([selector, options]) => {
      const select = root.querySelector(selector);
      const chosen = select.value;
      select.replaceChildren();
      if (selector !== ".matrix-sort") addOptions(select, [["", "any"]]);
      addOptions(select, options);
      select.value = chosen;
      if (select.value !== chosen) select.value = select.options[0].value;
    });
  }

  function setupControls(view) {
    const root = view.root;
    fillOptions(view);
    root.querySelector(".matrix-show").addEventListener("change", () => switchPictures(view));
    root.querySelectorAll("[data-filter], .matrix-sort").forEach((control) => {
      control.addEventListener(control.tagName === "INPUT" ? "input" : "change", () => refresh(view));
    });
  }

  function readControls(view) {
    const filters = {};
    view.root.querySelectorAll("[data-filter]").forEach((select) => { filters[select.dataset.filter] = select.value; });
    const sort = view.root.querySelector(".matrix-sort").value;
    return { filters: filters, sort: sort === "file" ? null : view.sortKeys[Number(sort)] };
  }

  // --- the table -----------------------------------------------------------------------------

  function headings(view) {
    const row = view.root.querySelector("thead tr");
    view.columns.forEach((column) => {
      const th = element("th", "method", column.title);
      th.setAttribute("scope", "col");
      th.setAttribute("title", column.name);
      row.append(th);
    });
  }

  function picture(src, alt, className) {
    const image = element("img", className);
    image.setAttribute("src", window.nnvisPicture(src));
    image.setAttribute("alt", alt);
    image.setAttribute("loading", "lazy");
    image.setAttribute("width", "96");
    image.setAttribute("height", "96");
    return image;
  }

  function gridCell(className, text) {
    const cell = element("td", className, text);
    cell.setAttribute("role", "gridcell");
    cell.tabIndex = -1;
    return cell;
  }

  function failedCell(cell, column, error) {
    cell.classList.add("failed");
    cell.append(element("span", "matrix-failed", "✗ failed"), element("span", "matrix-error", error || "no message"));
    cell.setAttribute("title", column.title + " failed: " + (error || ""));
  }

  // Both pictures' paths stay on the element, so the overlay/bare switch only swaps src.
  function mapCell(view, cell, column, image, result) {
    const map = picture(view.mode === "map" ? result.map_path || result.path : result.path,
      column.title + " on " + image.path, "matrix-map");
    map.dataset.overlay = result.path;
    map.dataset.map = result.map_path || result.path;
    cell.append(map);
    if (result.degenerate) cell.append(element("span", "matrix-blank", "shows nothing"));
    const metrics = Object.entries(result.metrics).map(([name, value]) => name + " " + number(value)).join(", ");
    cell.setAttribute("title", column.title + (metrics ? ": " + metrics : ""));
  }

  function methodCell(view, image, column) {
    const result = image.cells[column.i];
    const cell = gridCell("method");
    if (!result) cell.textContent = "–";
    else if (result.status === "error") failedCell(cell, column, result.error);
    else if (result.kind === "heatmap" && result.path) mapCell(view, cell, column, image, result);
    else cell.textContent = "no map";
    if (view.sort && view.sort.column === column) {  // the value the rows are sorted by, under its picture
      const value = view.sort.value(image);
      cell.append(element("span", "matrix-value", value === null ? "–" : view.sort.metric + " " + number(value)));
    }
    return cell;
  }

  function imageRow(view, image) {
    const row = element("tr");
    row.setAttribute("role", "row");
    row.dataset.image = String(image.index);
    if (image.href) row.dataset.href = image.href;
    const input = gridCell("input");
    if (image.input) input.append(picture(image.input, image.path, "matrix-input"));
    const several = view.data.models.length > 1;
    const wrong = view.data.models.some((name, model) => outcome(image, model) === "wrong");
    const predicted = gridCell(wrong ? "predicted wrong" : "predicted");
    view.data.models.forEach((name, model) => {
      const entry = said(image, model);
      const text = entry ? entry.name + " (" + percent(entry.probability) + ")" : "–";
      const line = element("span", "said", (outcome(image, model) === "wrong" ? "✗ " : "") + (several ? name + ": " : "") + text);
      predicted.append(line);
    });
    if (several && disagree(image)) predicted.append(element("span", "disagree-mark", "≠ models disagree"));
    const known = truth(image, 0);
    row.append(input, gridCell("file", image.path), predicted, gridCell("truth", known ? known.name : "unknown"));
    view.columns.forEach((column) => row.append(methodCell(view, image, column)));
    return row;
  }

  // Append the next page of rows. The sentinel is observed afresh, which reports its state at
  // once: a page too short to push it out of reach is followed by the next one.
  function renderMore(view, count) {
    const next = view.order.slice(view.shown, view.shown + (count === undefined ? PAGE : count));
    view.root.querySelector("tbody").append(...next.map((image) => imageRow(view, image)));
    view.shown += next.length;
    const more = view.root.querySelector(".matrix-more");
    more.hidden = view.shown >= view.order.length;
    more.textContent = "more images (" + (view.order.length - view.shown) + " left)";
    if (view.observer) {
      view.observer.unobserve(more);
      if (!more.hidden) view.observer.observe(more);
    }
    return next.length > 0;
  }

  // Filter and sort again from the controls, and start over from the first page.
  function refresh(view) {
    const controls = readControls(view);
    const images = view.data.images;
    view.sort = controls.sort;
    view.order = sortImages(images.filter((image) => matches(image, controls.filters, view.columns)), controls.sort);
    view.shown = 0;
    view.root.querySelector("tbody").replaceChildren();
    view.root.querySelector(".matrix-scroll").scrollTop = 0;
    renderMore(view);
    showCount(view);
    const first = view.root.querySelector("tbody td");
    if (first) first.tabIndex = 0;
  }

  function showCount(view) {
    const loading = view.pending ? " (loading the rest…)" : "";
    view.root.querySelector(".matrix-count").textContent =
      view.order.length + " of " + view.data.images.length + " images" + loading;
    view.root.querySelector(".matrix-empty").hidden = view.order.length > 0 || view.pending > 0;
  }

  // Rows that arrived from a chunk: in file order they join the end of the list as it is; under
  // a sort, the list is made again once every chunk is in.
  function extend(view, rows) {
    view.data.images.push(...rows);
    const controls = readControls(view);
    if (!controls.sort) {
      view.order.push(...rows.filter((image) => matches(image, controls.filters, view.columns)));
      if (view.shown < PAGE) renderMore(view);
      else renderMore(view, 0);
    }
    if (!view.pending) {
      view.sortKeys = sortKeys(view.data, view.columns);
      fillOptions(view);
      if (controls.sort) refresh(view);
      view.root.dataset.loaded = "all";
    }
    showCount(view);
    const first = view.root.querySelector("tbody td");
    if (first && !view.root.querySelector("tbody td[tabindex='0']")) first.tabIndex = 0;
  }

  // A large report's rows come in script chunks beside the page (a page opened from file:// may
  // run scripts from its folder but not fetch data); each chunk calls nnvisMatrixRows(n, rows).
  // The first chunk comes alone, so that its rows show soon; the rest are requested together and,
  // not being async, run in order as they arrive.
  function loadChunks(view, chunks) {
    view.pending = chunks.length;
    const arrived = {};
    window.nnvisMatrixRows = (number, rows) => { arrived[number] = rows; };
    const add = (number, then) => {
      const script = document.createElement("script");
      script.async = false;
      script.src = chunks[number];
      script.onload = () => {
        view.pending -= 1;
        extend(view, arrived[number] || []);
        delete arrived[number];
        script.remove();
        if (then) then();
      };
      script.onerror = () => {
        view.pending -= 1;
        view.root.querySelector(".matrix-count").textContent = "could not load " + chunks[number];
        if (then) then();
      };
      document.head.append(script);
    };
    add(0, () => { for (let number = 1; number < chunks.length; number++) add(number); });
  }

  function switchPictures(view) {
    view.mode = view.root.querySelector(".matrix-show").value;
    view.root.querySelectorAll("img.matrix-map").forEach((image) => {
      image.setAttribute("src", window.nnvisPicture(view.mode === "map" ? image.dataset.map : image.dataset.overlay));
    });
  }

  // --- moving around and opening an image ----------------------------------------------------

  // Roving tabindex: the grid is one tab stop, its current cell.
  function focusCell(view, cell) {
    view.root.querySelectorAll("tbody td[tabindex='0']").forEach((other) => { other.tabIndex = -1; });
    cell.tabIndex = 0;
    cell.focus();
  }

  // The cell one step away, adding the next page when stepping down past the last row made.
  function neighbour(view, cell, step) {
    const row = cell.parentElement;
    if (step[1]) return row.cells[cell.cellIndex + step[1]] || null;
    let next = step[0] > 0 ? row.nextElementSibling : row.previousElementSibling;
    if (!next && step[0] > 0 && renderMore(view)) next = row.nextElementSibling;
    return next ? next.cells[cell.cellIndex] : null;
  }

  function open(view, cell) {
    view.from = cell;
    focusCell(view, cell);
    const href = cell.parentElement.dataset.href;
    if (href) { location.href = href; return; }  // a paged report: the image's page
    const id = "img-" + cell.parentElement.dataset.image;
    const detail = view.root.querySelector(".matrix-detail");
    if (detail) {  // a page shown inline leaves the detail out: the notebook shows it on demand
      const image = view.data.images.find((entry) => String(entry.index) === cell.parentElement.dataset.image);
      detail.textContent = image.path + ": its full detail is shown by run.show_image(" + JSON.stringify(image.path)
        + ") in the notebook (run: the nnvis.run result shown here).";
      detail.hidden = false;
      return;
    }
    if (location.hash === "#" + id) document.getElementById(id).scrollIntoView();  // no hash change: no scroll
    else location.hash = id;
  }

  function onKey(view, event) {
    const cell = event.target.closest("td");
    if (!cell) return;
    const row = cell.parentElement;
    const step = STEPS[event.key];
    const target = step ? neighbour(view, cell, step)
      : event.key === "Home" ? row.cells[0] : event.key === "End" ? row.cells[row.cells.length - 1] : null;
    if (target) {
      event.preventDefault();
      focusCell(view, target);
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open(view, cell);
    }
  }

  // Escape in an image's detail: back to the matrix, on the cell the detail was opened from.
  function onEscape(view, event) {
    if (event.key !== "Escape" || event.defaultPrevented || !location.hash.startsWith("#img-")) return;
    event.preventDefault();
    location.hash = "matrix";
    const cell = view.from && view.from.isConnected ? view.from : view.root.querySelector("tbody td[tabindex='0']");
    if (cell) focusCell(view, cell);
  }

  function setup(root) {
    const island = JSON.parse(root.querySelector("script.matrix-data").textContent);
    const data = Object.assign({}, island.header, { images: island.rows });
    const columns = methodColumns(data);
    if (!columns.length) { root.hidden = true; return; }
    const view = { root: root, data: data, columns: columns, sortKeys: sortKeys(data, columns), mode: "overlay",
      order: [], shown: 0, sort: null, from: null, observer: null, pending: 0 };
    headings(view);
    setupControls(view);
    root.querySelector(".matrix-more").addEventListener("click", () => renderMore(view));
    if ("IntersectionObserver" in window) {
      view.observer = new IntersectionObserver((entries) => {
        if (entries.some((entry) => entry.isIntersecting)) renderMore(view);
      }, { root: root.querySelector(".matrix-scroll"), rootMargin: "400px" });
    }
    const body = root.querySelector("tbody");
    body.addEventListener("click", (event) => {
      const cell = event.target.closest("td");
      if (cell) open(view, cell);
    });
    body.addEventListener("keydown", (event) => onKey(view, event));
    document.addEventListener("keydown", (event) => onEscape(view, event));
    refresh(view);
    if (island.chunks.length) loadChunks(view, island.chunks);
    else root.dataset.loaded = "all";
  }

  function start() { document.querySelectorAll("[data-matrix]").forEach(setup); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
