"""Hostile names and data cannot run script in the report, and a run never touches the network."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
import torch
from conftest import NAME_PAYLOADS, add_hostile_names, registry_with

from nnvis_core import CategoricalMap, Chart, Gallery, Heatmap, Param, Plugin, Result, Scatter, Scope, Table, Text
from nnvis_core.demo import load_demo_model
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, AttributionPlugin, Explanation
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

# Each payload, run as script, would call alert(); each must show up in the page as plain text.
PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    '"><script>alert(2)</script>',
    "'><svg onload=alert(3)>",
    "</title><script>alert(4)</script>",
    "javascript:alert(5)",
    "{{ 7*7 }}<b onmouseover=alert(6)>",
]


class Hostile(Plugin):
    """Puts a payload into every text field of every artifact kind, and fails on one image."""

    name = "hostile"
    title = "Hostile " + PAYLOADS[3]
    description = "A plugin whose output is made of markup. " + PAYLOADS[1]
    scope = Scope.IMAGE
    params = (Param("note", str, PAYLOADS[5], "help " + PAYLOADS[2]),)

    def run_image(self, ctx, item, params):
        if item.record.index == 0:
            raise ValueError(f"failed on {PAYLOADS[0]}")
        p = PAYLOADS
        return Result([
            Heatmap(p[0], np.ones((4, 4)), caption=p[1], label=p[2]),
            Table(p[3], [p[4], "b"], [[p[5], 1.5], [item.record.relpath, p[0]]]),
            Text(p[1], p[2] + "\n" + params["note"]),
            CategoricalMap(p[4], np.array([[0, 1], [1, 0]]), {0: p[0], 1: p[1]}),
            Chart(p[2], [0, 1], {p[3]: [0.1, 0.2]}, x_label=p[4], y_label=p[5], x_ticks=[p[0], p[1]]),
            Scatter(p[5], np.array([[0.0, 1.0], [1.0, 0.0]]), labels=[p[0], p[1]], image_ids=[item.record.index, None]),
            Gallery(p[3], [None, np.zeros((4, 4, 3))], labels=[p[2], p[4]], image_ids=[item.record.index, None]),
        ], {p[1]: 0.5})


class HostileMethod(AttributionPlugin):
    """An attribution method with a payload for a title: it gets a row in the leaderboard."""

    name = "hostile_method"
    title = "Method " + PAYLOADS[4]
    description = "An attribution plugin named in markup. " + PAYLOADS[0]
    params = (TARGET, FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params):
        return Explanation(inputs[0].abs().sum(0))


@pytest.fixture
def hostile_report(few_demo_images, tmp_path):
    """A report whose file names, folder names, class names, model name and plugin output are all payloads."""
    labels = tmp_path / "labels.txt"
    class_names = add_hostile_names(few_demo_images, labels, PAYLOADS)
    model = tmp_path / f"{NAME_PAYLOADS[2]}.pt"
    torch.jit.script(load_demo_model()).save(str(model))
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, model=str(model), labels=labels, resize=64, crop=64,
                              plugins=["hostile", "hostile_method", "saliency"]),
                 registry_with(Hostile(), HostileMethod()))
    return out, class_names


def test_hostile_names_and_output_run_no_script_and_keep_the_markup(hostile_report, open_report):
    out, class_names = hostile_report
    report = read_report(out)
    hostile_paths = [i["path"] for i in report["images"] if any(n in i["path"] for n in NAME_PAYLOADS)]
    assert len(hostile_paths) == len(NAME_PAYLOADS)

    opened = open_report(out / "index.html")
    page = opened.page
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.evaluate("""document.querySelectorAll('body *').forEach(e => {  // what a payload's handler waits for
        for (const type of ['mouseover', 'mouseenter', 'focus']) e.dispatchEvent(new MouseEvent(type));
    })""")
    page.wait_for_timeout(300)

    assert opened.alerts() == [] and opened.dialogs == []
    assert opened.page_errors == [] and opened.console_errors == []
    handlers = page.evaluate(
        "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes].filter(a => a.name.startsWith('on'))"
        ".map(a => e.tagName + ' ' + a.name))")
    assert handlers == []
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], b[onmouseover], svg svg').length") == 0
    # Executable scripts hold no payload; JSON data islands (never run) may carry the names as
    # data, but with every "<" escaped, so none can close its <script> element.
    assert page.evaluate("[...document.scripts].filter(s => s.type !== 'application/json'"
                         " && s.textContent.includes('alert(')).length") == 0
    assert page.evaluate("[...document.scripts].filter(s => s.type === 'application/json'"
                         " && s.textContent.includes('<')).length") == 0
    assert page.title() == f"nnvis report: {NAME_PAYLOADS[2]}.pt"

    # Every payload is there as text, so nothing was dropped or cut by the browser's parser.
    text = page.evaluate("document.body.textContent")
    for payload in PAYLOADS + class_names + hostile_paths:
        assert payload in text, payload
    nav = page.evaluate("[...document.querySelectorAll('nav li a')].map(a => a.textContent)")
    assert nav == [i["path"] for i in report["images"]]
    sections = page.evaluate("[...document.querySelectorAll('main > section.image')].map(s => s.id)")
    assert sections == [f"img-{i['index']}" for i in report["images"]]
    tooltips = page.evaluate("[...document.querySelectorAll('[title]')].map(e => e.getAttribute('title'))")
    assert Hostile.description in tooltips and f"help {PAYLOADS[2]}" in tooltips
    leaderboard = page.evaluate(
        "[...document.querySelectorAll('table.leaderboard tbody th')].map(th => th.textContent)")
    assert HostileMethod.title in leaderboard


@pytest.fixture
def no_network(monkeypatch):
    """Every way to open a connection or resolve a name raises, and is recorded."""
    attempts = []

    def refuse(what):
        def refused(*args, **kwargs):
            attempts.append(what)
            raise OSError(f"network access blocked by the test ({what})")
        return refused

    class BlockedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse("socket.socket")()

    monkeypatch.setattr(socket, "socket", BlockedSocket)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "socketpair", "create_server"):
        monkeypatch.setattr(socket, name, refuse(f"socket.{name}"))
    return attempts


# What matters here is that nothing reaches for the network, not how much work is done.
CHEAP = {"faithfulness_steps": 0, "samples": 2, "steps": 4, "max_levels": 2, "images": 2}


def test_a_full_report_runs_with_networking_blocked(few_demo_images, tmp_path, no_network):
    registry = load_registry()
    params = {}
    for name, registered in registry.plugins.items():
        declared = {p.name: p for p in registered.item.params}
        params[name] = {key: value for key, value in CHEAP.items() if key in declared
                        and (declared[key].minimum is None or value >= declared[key].minimum)}
    for folder in sorted(few_demo_images.iterdir())[1:]:
        shutil.rmtree(folder)  # two images are enough
    out = tmp_path / "out"
    outcome = build_report(ReportConfig(few_demo_images, out, plugins=["all"], params=params), registry)
    report = read_report(out)
    assert outcome.exit_code == 0, [p["name"] for p in report["plugins"] if p["failures"]]
    ran, left_out = {p["name"] for p in report["plugins"]}, {p["name"] for p in report["skipped_plugins"]}
    assert ran | left_out == set(registry.plugins) and not ran & left_out  # the transformer methods: no attention
    assert no_network == []
    with pytest.raises(OSError, match="blocked"):  # the block itself works
        socket.create_connection(("example.com", 80))
