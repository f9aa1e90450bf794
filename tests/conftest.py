"""Shared fixtures: the bundled demo images, a small copy of them, fake plugin distributions."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from counter_plugins import COUNTERS

ROOT = Path(__file__).resolve().parents[1]
DEMO_IMAGES = ROOT / "examples" / "demo" / "images"
TINY_PLUGIN = Path(__file__).parent / "fixtures" / "nnvis-plugin-tiny"
EXAMPLE_PLUGIN = ROOT / "examples" / "nnvis-plugin-example"
RISE_PLUGIN = ROOT / "examples" / "nnvis-plugin-rise"


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs a worker per core), each worker computes on one thread: two
    workers of two threads each would fight over two cores. So do the processes a test starts (a
    notebook's kernel, a CLI run, an engine's workers): a Jupyter kernel computing on two threads beside
    a busy worker ran the notebook's report 4x slower (41 s against 10 s on one thread)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


# The files that take longest, longest first (from `make test`'s --durations on 2 cores). pytest-xdist
# hands whole files to its two workers in collection order (`make test` turns off its own reordering,
# which puts files with many short tests first and left these for last, one worker finishing alone):
# the long ones start first and the short ones fill in at the end.
LONGEST_FILES = ("reports/test_browser.py", "core/engines/test_ray_engine.py", "core/engines/test_process_engine.py",
                 "api/test_notebook.py", "core/demo/test_demo_vit.py", "api/test_docs_python_api.py",
                 "plugins/cams/test_cam_parity.py", "plugins/occlusion/test_occlusion_plugin.py",
                 "docs/test_plugin_guide.py", "cli/test_plugin_packages.py", "core/models/test_architecture_sweep.py",
                 "reports/test_image_store.py", "plugins/concepts/test_planted_concept.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0].removeprefix("tests/")
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: every other file, and every file's own tests, keep their order


def pip_install_offline(sources: list[Path], workdir: Path) -> dict[str, str]:
    """pip-install plugin source folders into workdir/site, as a user would, but offline and
    without touching the test venv; return an environment whose Python sees them.

    Each source is copied first so that the build leaves nothing in the repository.
    """
    target, copies = workdir / "site", []
    for source in sources:
        copies.append(workdir / "src" / source.name)
        shutil.copytree(source, copies[-1], ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), *map(str, copies)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def registry_with(*plugins):
    """The installed plugins plus `plugins`, registered as a module would register them."""
    from nnvis_core import hookimpl
    from nnvis_core.run.registry import load_registry

    holder = types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: [register(p) for p in plugins]))
    return load_registry(extra=[("test-plugins", holder)])


# File and folder names cannot hold "/", so these payloads leave closing tags out.
NAME_PAYLOADS = ["<img src=x onerror=alert(1)>", '"><script>alert(2)', "'><svg onload=alert(3)>"]


def add_hostile_names(images: Path, labels: Path, payloads: list[str]) -> list[str]:
    """Copy an image of `images` into a folder and a file named after each NAME_PAYLOADS entry, and
    write to `labels` 8 class names made of `payloads`, class 0 matching the first hostile folder
    (so a hostile true class is shown too). Returns the class names."""
    source = sorted(images.rglob("*.png"))
    for number, name in enumerate(NAME_PAYLOADS):
        folder = images / f"{name} folder"
        folder.mkdir()
        shutil.copy(source[number], folder / f"{name}.png")
    class_names = [f"{payloads[i % len(payloads)]} {i}" for i in range(8)]
    class_names[0] = f"{NAME_PAYLOADS[0]} folder"
    labels.write_text("\n".join(class_names) + "\n", encoding="utf-8")
    return class_names


def run_nnvis(env: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The nnvis command in a fresh interpreter that sees `env`'s PYTHONPATH."""
    return subprocess.run([sys.executable, "-m", "nnvis_cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="session")
def plugin_packages(tmp_path_factory) -> dict[str, str]:
    """The tiny fixture, the example packages (mean-activations and RISE), a `nnvis plugins new
    brightness` skeleton and a `nnvis plugins new mymethod --kind attribution` one (written by the
    command, in an empty folder), installed together in one pip call (pip is slow: add packages
    here rather than calling it again); the environment that sees them."""
    from click.testing import CliRunner

    from nnvis_cli.main import cli
    from nnvis_cli.scaffold import write_plugin_package

    workdir = tmp_path_factory.mktemp("plugin-packages")
    skeleton = write_plugin_package("brightness", workdir / "generated")
    empty = workdir / "empty"
    empty.mkdir()
    written = CliRunner().invoke(cli, ["plugins", "new", "mymethod", "--kind", "attribution", "-o", str(empty)])
    assert written.exit_code == 0, written.output
    attribution = empty / "nnvis-plugin-mymethod"
    env = pip_install_offline([TINY_PLUGIN, EXAMPLE_PLUGIN, RISE_PLUGIN, skeleton, attribution], workdir)
    env["NNVIS_TEST_RISE"] = str(workdir / "src" / RISE_PLUGIN.name)
    env["NNVIS_TEST_SKELETON"] = str(workdir / "src" / skeleton.name)
    env["NNVIS_TEST_ATTRIBUTION"] = str(workdir / "src" / attribution.name)
    env["NNVIS_TEST_EXAMPLE"] = str(workdir / "src" / EXAMPLE_PLUGIN.name)
    return env


@pytest.fixture(scope="session")
def demo_images() -> Path:
    assert DEMO_IMAGES.is_dir(), "bundled demo images missing: run `nnvis demo images examples/demo`"
    return DEMO_IMAGES


def copy_demo(demo_images: Path, target: Path, classes: int = 3, per_class: int = 2) -> Path:
    """The first `per_class` images of the first `classes` demo classes, in class folders under `target`."""
    for folder in sorted(p for p in demo_images.iterdir() if p.is_dir())[:classes]:
        (target / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy(image, target / folder.name / image.name)
    return target


@pytest.fixture
def few_demo_images(tmp_path: Path, demo_images: Path) -> Path:
    """Two images of each of the first three classes, in class folders, in a temp dir."""
    return copy_demo(demo_images, tmp_path / "images")


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch):
    """Make a distribution with `nnvis` entry points importable.

    fake_distribution(name, {ep: target}, files, requires=...)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(name: str, entry_points: dict[str, str], files: dict[str, str] | None = None, version: str = "1.0",
             requires: tuple[str, ...] = ()):
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        requirements = "".join(f"Requires-Dist: {r}\n" for r in requires)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requirements}")
        lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[nnvis]\n{lines}\n")
        for relpath, text in (files or {}).items():
            path = site / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return site

    yield make
    for module in [m for m in sys.modules if m.startswith("fakeplug_")]:
        del sys.modules[module]


@pytest.fixture
def permissions_enforced(monkeypatch):
    """Make a file with no read permission unreadable to Pillow even when the tests run as root
    (who reads anything), so that a permission test means the same for every user."""
    if os.geteuid() != 0:
        return
    from PIL import Image

    real_open = Image.open

    def open_as_a_user(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and os.stat(path).st_mode & 0o444 == 0:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("nnvis_core.images.Image.open", open_as_a_user)


@pytest.fixture(scope="module")
def counters(tmp_path_factory):
    """The counter plugins (tests/counter_plugins.py) installed as a distribution: (environment
    for a subprocess, calls log)."""
    site = tmp_path_factory.mktemp("site")
    info = site / "nnvis_test_counters-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nnvis-test-counters\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[nnvis]\ncounters = fakeplug_counters\n")
    (site / "fakeplug_counters.py").write_text(textwrap.dedent(COUNTERS))
    calls = site / "calls.log"
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    saved = os.environ.get("NNVIS_TEST_CALLS")
    os.environ["NNVIS_TEST_CALLS"] = str(calls)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    yield env, calls
    sys.path.remove(str(site))
    sys.modules.pop("fakeplug_counters", None)
    if saved is None:
        os.environ.pop("NNVIS_TEST_CALLS", None)
    else:
        os.environ["NNVIS_TEST_CALLS"] = saved


# --- comparing reports ------------------------------------------------------------------------
TIMING_KEYS = {"timing", "seconds", "seconds_per_image"}


def without_timings(value):
    """report.json content with every timing removed (the only part that may differ between runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def report_snapshot(out: Path) -> dict:
    """A report folder as comparable data: report.json and index.html apart from timings, every other file's bytes."""
    import hashlib
    import json
    import re

    files = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(out.rglob("*")) if p.is_file() and p.name not in ("report.json", "index.html")}
    html = re.sub(r"\b\d+(?:\.\d+)? s\b", "T s", (out / "index.html").read_text(encoding="utf-8"))
    # the leaderboard's time column (value, and which method is marked fastest)
    html = re.sub(r'<td[^>]*data-key="seconds_per_image".*?</td>', "<td>T</td>", html, flags=re.S)
    report = without_timings(json.loads((out / "report.json").read_text(encoding="utf-8")))
    return {"report": report, "html": html, "files": files}


@pytest.fixture
def snapshot():
    """snapshot(out_dir) -> a report folder as data, equal for two runs that differ only in timing."""
    return report_snapshot


# --- a real browser -------------------------------------------------------------------------
# Debian's Chromium driven by Playwright's Python package: `playwright install` cannot download
# here, so the executable is given. `.ci/run` installs it; NNVIS_CHROMIUM overrides the path.
CHROMIUM = Path(os.environ.get("NNVIS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the whole session."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} missing: install Debian's chromium (see .ci/run)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class OpenedPage:
    """A report page with what the browser complained about, what it fetched, and any script
    that tried to talk to the user (alert, confirm, prompt: what injected markup would call)."""

    page: object
    console_errors: list[str]
    page_errors: list[str]
    requests: list[str]
    dialogs: list[str] = field(default_factory=list)

    def alerts(self) -> list[str]:
        """Messages passed to alert/confirm/prompt since the page loaded (they are hooked, never shown)."""
        return self.page.evaluate("window.__nnvisAlerts || []")


# Runs before any script of the page: records what alert/confirm/prompt would have shown.
HOOK_DIALOGS = """
window.__nnvisAlerts = [];
for (const name of ['alert', 'confirm', 'prompt']) {
  window[name] = (message) => { window.__nnvisAlerts.push(name + ': ' + String(message)); };
}
"""


@pytest.fixture
def open_report(browser):
    """open_report(path_to_index_html) -> OpenedPage, loaded from file:// and settled."""
    contexts = []

    def open_(index: Path) -> OpenedPage:
        context = browser.new_context()
        contexts.append(context)
        context.add_init_script(HOOK_DIALOGS)
        page = context.new_page()
        opened = OpenedPage(page, [], [], [])
        page.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: opened.page_errors.append(str(e)))
        page.on("request", lambda r: opened.requests.append(r.url))
        page.goto(index.resolve().as_uri(), wait_until="load")
        return opened

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    """Keep the tests' feature-visualization pictures out of the user's ~/.cache/nnvis."""
    previous = os.environ.get("NNVIS_CACHE")
    os.environ["NNVIS_CACHE"] = str(tmp_path_factory.mktemp("nnvis-cache"))
    yield
    if previous is None:
        os.environ.pop("NNVIS_CACHE", None)
    else:
        os.environ["NNVIS_CACHE"] = previous
