"""`circuitstore view` in a real browser: the distribution's Chromium, driven by Playwright,
against the command itself (a subprocess, as a user starts it) over a real Neo4j holding a slice
of the demo corpus, its labels and the interventions `verify` stored for one prompt.

Each page's drawing is checked against the query layer's own answers (`query circuit`, `query
drivers`, `query examples`, the subgraph scores), no page may log a JavaScript error, and the
guard, the bad-input pages and a port in use are checked as a user meets them.

With CIRCUITSTORE_SCREENSHOTS=DIR the tests also save the docs' pictures there
(`CIRCUITSTORE_SCREENSHOTS=docs/images pytest tests/integration/test_view.py`).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from circuitstore.demo import CORPUS, LABELS
from circuitstore.query import CircuitStore
from circuitstore.query.labels import import_labels

from .helpers import fill_demo

pytestmark = pytest.mark.integration

PER_TASK = 3
SHOTS = os.environ.get("CIRCUITSTORE_SCREENSHOTS")


# -- the store, the command, the browser ----------------------------------------------------


@pytest.fixture(scope="module")
def demo(driver, neo4j_settings, tmp_path_factory) -> CircuitStore:  # type: ignore[no-untyped-def]
    """A slice of the demo corpus (every task), its labels, and verify's checks of one prompt."""
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    tasks = sorted({r["task"] for r in rows})
    picked = [r for t in tasks for r in [x for x in rows if x["task"] == t][:PER_TASK]]
    folder = tmp_path_factory.mktemp("view-demo")
    assert fill_demo(driver, neo4j_settings.database, picked, folder) == len(picked)
    store = CircuitStore(driver, neo4j_settings.database)
    store = CircuitStore(driver, neo4j_settings.database, store.tset().id)
    import_labels(store, [LABELS], stored_only=True)
    _verify(store, next(r["id"] for r in picked if r["task"] == "ioi"))
    return store


def _verify(store: CircuitStore, key: str) -> None:
    from circuitstore.commands.verify import check_prompt
    from circuitstore.ingest.intervene.verify import VerifyConfig
    from circuitstore.ingest.intervene.write import write_report

    write_report(store.driver, store.database, check_prompt(VerifyConfig(key, top=5), store))


def view_env(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        **os.environ,
        "NEO4J_URI": settings.uri,
        "NEO4J_USERNAME": settings.username,
        "NEO4J_PASSWORD": settings.password.get_secret_value(),
    }


def start_view(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    """`circuitstore view --port 0 --no-open ARGS` and the one URL line it prints."""
    cmd = [sys.executable, "-m", "circuitstore", "view", "--port", "0", "--no-open", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not sel.select(timeout=60):
            proc.kill()
            pytest.fail("circuitstore view printed no URL within 60 s")
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not line:
        pytest.fail(f"circuitstore view exited: {proc.communicate()[1]}")
    return proc, line


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def viewer(demo, neo4j_settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    proc, url = start_view(view_env(neo4j_settings))
    yield url
    stop(proc)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:  # not a skip: the browser tests are part of the integration tier
        pytest.fail(
            "Chromium is not installed: apt-get install chromium (scripts/bootstrap.sh does)"
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium())
        yield launched
        launched.close()


@pytest.fixture
def page(browser, viewer):  # type: ignore[no-untyped-def]
    """A page that has opened the viewer's URL (so it holds the cookie), and fails its test on
    any JavaScript error or console error."""
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    tab.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    assert tab.goto(viewer).status == 200
    tab.wait_for_selector("body[data-ready='1']")
    yield tab
    context.close()
    assert errors == []


def base(url: str) -> str:
    return url.split("/?", 1)[0]


def open_page(tab, viewer: str, path: str):  # type: ignore[no-untyped-def]
    response = tab.goto(base(viewer) + path)
    tab.wait_for_selector("body[data-ready='1']")
    return response


def set_threshold(tab, value: float) -> None:  # type: ignore[no-untyped-def]
    tab.eval_on_selector(
        "#threshold",
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }",
        str(value),
    )
    tab.wait_for_function(
        "v => document.getElementById('threshold-value').textContent === v", arg=f"{value:.2f}"
    )


def ioi_key(store: CircuitStore) -> str:
    return next(p.key for p in store.prompts(limit=100) if p.extra.get("task") == "ioi")


def drawn(tab) -> set[str]:  # type: ignore[no-untyped-def]
    return set(tab.eval_on_selector_all("[data-node-id]", "ns => ns.map(n => n.dataset.nodeId)"))


# -- the pages, checked against the query layer -------------------------------------------


def test_the_prompt_list_shows_every_prompt_with_its_scores(page, viewer, demo):
    prompts = demo.prompts(limit=1000)
    rows = page.eval_on_selector_all("#prompts tbody tr", "rs => rs.map(r => r.dataset.key)")
    assert rows == sorted(p.key for p in prompts)
    page.fill("#search", "ioi")
    shown = page.eval_on_selector_all("#prompts tbody tr", "rs => rs.map(r => r.dataset.key)")
    assert shown
    assert all("ioi" in k or "ioi" in str(demo.prompt_summary(k).extra) for k in shown)
    page.click("th[data-sort='s.replacement']")  # scores sort best first
    first = page.eval_on_selector("#prompts tbody tr", "r => r.dataset.key")
    assert (
        first
        == max(
            (p for p in prompts if p.key in shown), key=lambda p: p.scores["replacement"] or 0
        ).key
    )


@pytest.mark.parametrize("threshold", [0.8, 0.5, 1.0])
def test_a_prompt_page_draws_the_nodes_query_circuit_keeps(page, viewer, demo, threshold):
    key = ioi_key(demo)
    open_page(page, viewer, f"/prompt/{quote(key)}")
    set_threshold(page, threshold)
    expected = {n.id for n in demo.circuit(key, threshold).subgraph.nodes}
    assert drawn(page) == expected
    assert page.locator("[data-node-id]").count() == len(expected)


def feature_with_drivers(demo: CircuitStore, key: str) -> str:
    """A feature of the prompt's circuit with corpus-wide drivers (above layer 0), and targets
    where one has them (below the last layer), labelled where one is: the most connected."""
    nodes = demo.circuit(key, 0.8).subgraph.nodes
    last = demo.tset().n_layers - 1
    feats = [n for n in nodes if n.kind == "feature" and (n.layer or 0) > 0]

    def rank(n) -> tuple[bool, bool, int, str]:  # type: ignore[no-untyped-def]
        name = n.id.split("@")[0]
        links = len(demo.drivers(name).links) + len(demo.targets(name).links)
        return n.layer < last, n.label is not None, links, n.id

    return max(feats, key=rank).id


def test_clicking_a_feature_shows_its_card_with_the_drivers_query_drivers_gives(page, viewer, demo):
    key = ioi_key(demo)
    node = feature_with_drivers(demo, key)
    open_page(page, viewer, f"/prompt/{quote(key)}")
    page.locator(f'[data-node-id="{node}"]').click()
    page.wait_for_selector(f'#card[data-node="{node}"]')
    names = page.eval_on_selector_all(
        "#drivers-table tbody tr", "rs => rs.map(r => r.dataset.name)"
    )
    assert names == [link.name for link in demo.drivers(node.split("@")[0]).links]
    assert names  # the card shows some
    inputs = page.eval_on_selector_all(
        "#inputs-table tbody tr", "rs => rs.map(r => r.dataset.name)"
    )
    expected = demo.drivers(node, prompt=key, top=10, sign="abs", by_head=True).links
    assert inputs == [link.name for link in expected]


def test_hovering_a_node_highlights_its_inputs_and_outputs(page, viewer, demo):
    key = ioi_key(demo)
    open_page(page, viewer, f"/prompt/{quote(key)}")
    circuit = demo.circuit(key, 0.8).subgraph
    node = max(
        circuit.nodes,
        key=lambda n: sum(
            node_id in (e.source, e.target) for e in circuit.edges for node_id in [n.id]
        ),
    ).id
    near = (
        {node}
        | {e.source for e in circuit.edges if e.target == node}
        | {e.target for e in circuit.edges if e.source == node}
    )
    page.locator(f'[data-node-id="{node}"]').hover()
    lit = set(page.eval_on_selector_all("circle.hl", "ns => ns.map(n => n.dataset.nodeId)"))
    assert lit == near
    assert page.is_visible("#hover")


def test_pinning_three_nodes_shows_the_subgraph_scores_python_computes(page, viewer, demo):
    key = ioi_key(demo)
    open_page(page, viewer, f"/prompt/{quote(key)}")
    nodes = demo.circuit(key, 0.8).subgraph.nodes
    pinned = sorted(n.id for n in nodes if n.kind == "feature")[:3]
    assert len(pinned) == 3
    for node in pinned:
        page.locator(f'[data-node-id="{node}"]').click(modifiers=["Shift"])
    shown = page.wait_for_selector("#pinned-scores[data-replacement]")
    assert (
        page.eval_on_selector_all("[data-pinned]", "ns => ns.map(n => n.dataset.pinned)") == pinned
    )
    expected = demo.subgraph_scores(key, pinned)
    assert float(shown.get_attribute("data-replacement")) == pytest.approx(
        expected.replacement, rel=1e-12
    )
    assert float(shown.get_attribute("data-completeness")) == pytest.approx(
        expected.completeness, rel=1e-12
    )
    exported = json.loads(
        page.evaluate(
            "url => fetch(url).then(r => r.text())",
            page.get_attribute("#export-pinned", "href"),
        )
    )
    assert len(exported["qParams"]["pinnedIds"]) == 3
    if SHOTS:
        page.locator(f'[data-node-id="{pinned[-1]}"]').click()
        page.wait_for_selector(f'#card[data-node="{pinned[-1]}"]')
        page.screenshot(path=str(Path(SHOTS) / "view-prompt.png"))


def test_a_feature_page_shows_its_top_examples_in_query_examples_order(page, viewer, demo):
    key = ioi_key(demo)
    feature = feature_with_drivers(demo, key).split("@")[0]
    open_page(page, viewer, f"/feature/{quote(feature)}")
    rows = page.eval_on_selector_all(
        "#examples-table tbody tr", "rs => rs.map(r => [r.dataset.prompt, Number(r.dataset.pos)])"
    )
    assert rows == [[e.prompt, e.pos] for e in demo.examples(feature, top=25)]
    assert page.is_visible("#drivers-table")
    assert page.is_visible("#prompts-table")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "view-feature.png"))


def test_the_card_shows_the_interventions_verify_stored(page, viewer, demo):
    stored = demo.interventions(prompt=ioi_key(demo))
    single = next(i for i in stored if i.kind == "single")
    feature = single.features[0]
    open_page(page, viewer, f"/feature/{quote(feature)}")
    prompts = page.eval_on_selector_all(
        "#interventions-table tbody tr td:first-child", "ts => ts.map(t => t.textContent)"
    )
    assert len(prompts) == len(demo.interventions(feature=feature))


# -- the guard and bad input ----------------------------------------------------------------


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_without_the_token_the_answer_is_403_and_shows_nothing(viewer, demo):
    key = ioi_key(demo)
    for path in ("/", f"/prompt/{quote(key)}", "/?token=wrong", "/static/prompt.js"):
        status, text = fetch(base(viewer) + path)
        assert status == 403
        assert key not in text
        assert "payload" not in text


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/prompt/no-such-prompt", 404, "unknown prompt 'no-such-prompt'"),
        ("/feature/mlp0tc[999999]", 400, "mlp0tc[999999]"),
        ("/feature/not-a-feature", 400, "feature 'not-a-feature': expected"),
        ("/api/node?prompt={key}&node=mlp0tc[1]@999", 404, "is not in the stored graph"),
        ("/api/node?prompt={key}&node=bad node", 400, "bad node"),
    ],
)
def test_bad_input_gets_a_page_that_says_what_is_wrong(viewer, demo, path, status, message):
    url = base(viewer) + path.format(key=ioi_key(demo)).replace(" ", "%20")
    got, text = fetch(url + ("&" if "?" in url else "?") + "token=" + viewer.split("token=")[1])
    assert got == status
    assert message in text
    assert "Traceback" not in text
    # ... and the server keeps serving.
    assert fetch(viewer)[0] == 200


def test_a_store_that_is_down_gets_a_page_that_says_so(neo4j_settings):
    env = {**view_env(neo4j_settings), "NEO4J_URI": "bolt://127.0.0.1:9"}
    proc, url = start_view(env)
    try:
        for _ in range(2):  # the server keeps serving
            status, text = fetch(url)
            assert status == 503
            assert "127.0.0.1:9" in text
            assert "Traceback" not in text
    finally:
        stop(proc)
    assert "serving anyway" in proc.stderr.read()  # type: ignore[union-attr]


def test_a_port_in_use_is_one_line_and_a_non_zero_exit(viewer, neo4j_settings):
    port = base(viewer).rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "circuitstore", "view", "--port", port, "--no-open"],
        env=view_env(neo4j_settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is in use: choose another with --port (0 picks a free one)"
    ]
    assert done.stdout == ""
