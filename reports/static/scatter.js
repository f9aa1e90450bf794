// Interactive scatter of image thumbnails (t-SNE maps): wheel zooms about the pointer,
// dragging pans, hovering names the image, clicking goes to its section. Points are drawn
// on one canvas from sprite sheets, so thousands of images stay quick; with more than
// DOTS_ABOVE points in view they are drawn as dots until zoomed in. Data comes from the
// JSON block beside the canvas, or, in a large report, from the script it names (a page
// opened from file:// may run scripts from its folder, but may not fetch data); all text
// goes in through textContent, never as HTML.
(function () {
  "use strict";
  var PAD = 24;
  var DOTS_ABOVE = 3000;
  var waiting = {};  // script chunk path -> the scatter waiting for its data
  window.nnvisScatterData = function (src, data) { if (waiting[src]) waiting[src](data); };

  function setup(root) {
    var data = JSON.parse(root.querySelector(".scatter-data").textContent);
    if (!data.src) { start(root, data); return; }
    var script = document.createElement("script");
    waiting[data.src] = function (loaded) {
      delete waiting[data.src];
      loaded.page_size = data.page_size;
      start(root, loaded);
    };
    script.src = data.src;
    document.head.appendChild(script);
  }

  function start(root, data) {
    var canvas = root.querySelector(".scatter-canvas");
    var pen = canvas.getContext("2d");
    var tip = root.querySelector(".scatter-tip");
    var legend = root.querySelector(".scatter-legend");
    var choice = root.querySelector(".scatter-colour");
    var n = data.x.length;
    var size = canvas.width;
    var view = { scale: 1, dx: 0, dy: 0 };
    var state = { colourBy: "predicted", hovered: -1, drag: null, pending: false, dots: false };
    var base = Math.max(8, Math.min(40, 0.8 * (size - 2 * PAD) / Math.sqrt(Math.max(n, 1))));
    var sheets = [], perSheet = n;
    if (data.sprite) {
      perSheet = data.sprite.per_sheet || n;
      sheets = (data.sprite.sheets || [data.sprite.path]).map(function (path) {
        var sheet = new Image();
        sheet.onload = redraw;
        sheet.src = window.nnvisPicture(path);
        return sheet;
      });
    }
    function drawThumb(i, x, y, t) {  // point i's picture, when its sheet has arrived
      var sheet = sheets[Math.floor(i / perSheet)];
      if (!sheet || !sheet.complete || !sheet.naturalWidth || data.ids[i] === null) return;
      var tile = data.sprite.tile, cell = i % perSheet;
      var col = cell % data.sprite.columns, row = Math.floor(cell / data.sprite.columns);
      pen.drawImage(sheet, col * tile, row * tile, tile, tile, x - t / 2, y - t / 2, t, t);
    }

    function label(i) { return state.colourBy === "truth" ? data.truth[i] : data.predicted[i]; }
    function colour(i) { return data.palette[label(i)] || "#777"; }
    function thumb() { return Math.max(6, Math.min(96, base * Math.sqrt(view.scale))); }
    function position(i) {  // canvas pixels
      var w = size - 2 * PAD;
      return [(PAD + data.x[i] * w) * view.scale + view.dx, (PAD + data.y[i] * w) * view.scale + view.dy];
    }
    function toCanvas(event) {
      var box = canvas.getBoundingClientRect();
      return [(event.clientX - box.left) * size / box.width, (event.clientY - box.top) * size / box.height];
    }

    function draw() {
      state.pending = false;
      var s = thumb();
      pen.clearRect(0, 0, size, size);
      var visible = [];
      for (var i = 0; i < n; i++) {
        var p = position(i);
        if (i !== state.hovered && p[0] >= -s && p[1] >= -s && p[0] <= size + s && p[1] <= size + s) visible.push(i);
      }
      state.dots = visible.length > DOTS_ABOVE;
      var dot = Math.max(2, Math.min(6, s / 3));
      visible.forEach(function (i) {
        var p = position(i);
        pen.fillStyle = colour(i);
        if (state.dots) { pen.fillRect(p[0] - dot / 2, p[1] - dot / 2, dot, dot); return; }
        pen.fillRect(p[0] - s / 2 - 2, p[1] - s / 2 - 2, s + 4, s + 4);
        drawThumb(i, p[0], p[1], s);
      });
      if (state.hovered >= 0) {  // the hovered picture on top, as a picture even among dots
        var h = position(state.hovered), t = state.dots ? Math.max(s, 24) * 1.6 : s * 1.6;
        pen.fillStyle = colour(state.hovered);
        pen.fillRect(h[0] - t / 2 - 2, h[1] - t / 2 - 2, t + 4, t + 4);
        drawThumb(state.hovered, h[0], h[1], t);
      }
    }
    function redraw() {
      if (!state.pending) { state.pending = true; window.requestAnimationFrame(draw); }
    }

    function hit(point) {  // the topmost picture (or dot) under the pointer, or -1
      var half = state.dots ? 4 : thumb() / 2 + 2;
      for (var i = n - 1; i >= 0; i--) {
        var p = position(i);
        if (Math.abs(p[0] - point[0]) <= half && Math.abs(p[1] - point[1]) <= half) return i;
      }
      return -1;
    }

    function showTip(i, event) {
      if (i < 0) { tip.hidden = true; return; }
      var lines = [data.names[i] || "point " + i];
      if (data.image_predicted[i] !== null) lines.push("predicted: " + data.image_predicted[i]);
      if (data.image_truth[i] !== null) lines.push("true: " + data.image_truth[i]);
      if (data.image_predicted[i] === null && data.predicted[i]) lines.push(data.predicted[i]);
      tip.textContent = lines.join("\n");
      var box = root.getBoundingClientRect();
      tip.style.left = (event.clientX - box.left + 14) + "px";
      tip.style.top = (event.clientY - box.top + 14) + "px";
      tip.hidden = false;
    }

    function fillLegend() {
      var counts = {};
      for (var i = 0; i < n; i++) counts[label(i)] = (counts[label(i)] || 0) + 1;
      legend.textContent = "";
      Object.keys(counts).sort().forEach(function (name) {
        var item = document.createElement("li"), swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = data.palette[name] || "#777";
        item.appendChild(swatch);
        item.appendChild(document.createTextNode(name + " (" + counts[name] + ")"));
        legend.appendChild(item);
      });
    }

    canvas.addEventListener("wheel", function (event) {
      event.preventDefault();
      var m = toCanvas(event), old = view.scale;
      view.scale = Math.max(0.5, Math.min(60, old * Math.exp(-event.deltaY * 0.0015)));
      view.dx = m[0] - (m[0] - view.dx) * view.scale / old;
      view.dy = m[1] - (m[1] - view.dy) * view.scale / old;
      redraw();
    }, { passive: false });
    canvas.addEventListener("mousedown", function (event) {
      state.drag = { at: toCanvas(event), moved: false };
    });
    window.addEventListener("mouseup", function () {
      window.setTimeout(function () { state.drag = null; }, 0);
    });
    canvas.addEventListener("mousemove", function (event) {
      var m = toCanvas(event);
      if (state.drag && event.buttons) {
        var ddx = m[0] - state.drag.at[0], ddy = m[1] - state.drag.at[1];
        if (state.drag.moved || Math.abs(ddx) + Math.abs(ddy) > 3) {
          state.drag.moved = true;
          view.dx += ddx; view.dy += ddy; state.drag.at = m;
          tip.hidden = true;
          redraw();
          return;
        }
      }
      var i = hit(m);
      canvas.style.cursor = i >= 0 && data.ids[i] !== null ? "pointer" : "grab";
      if (i !== state.hovered) { state.hovered = i; redraw(); }
      showTip(i, event);
    });
    canvas.addEventListener("mouseleave", function () {
      state.hovered = -1; tip.hidden = true; redraw();
    });
    canvas.addEventListener("click", function (event) {
      if (state.drag && state.drag.moved) return;
      var i = hit(toCanvas(event));
      if (i < 0 || data.ids[i] === null) return;
      if (!data.page_size) { window.location.hash = "#img-" + data.ids[i]; return; }
      // a paged report (nnvis_reports.paging): the image is on page id // page_size
      var page = String(Math.floor(data.ids[i] / data.page_size));
      window.location.href = "pages/images-" + "0000".slice(page.length) + page + ".html#img-" + data.ids[i];
    });
    root.querySelector(".scatter-reset").addEventListener("click", function () {
      view.scale = 1; view.dx = 0; view.dy = 0; redraw();
    });
    if (choice) {
      choice.addEventListener("change", function () {
        state.colourBy = choice.value; fillLegend(); redraw();
      });
    }

    // For tests and the console: where point i is on the page, and what it is coloured by.
    root.nnvisScatter = {
      view: view,
      colourBy: function () { return state.colourBy; },
      colourOf: colour,
      clientPosition: function (i) {
        var box = canvas.getBoundingClientRect(), p = position(i);
        return [box.left + p[0] * box.width / size, box.top + p[1] * box.height / size];
      }
    };
    fillLegend();
    draw();
  }

  document.querySelectorAll(".scatter-view").forEach(setup);
})();
