"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no
browser is downloaded), against the real ``imgvec serve`` on real UKBench photos embedded with
real MobileNetV2 weights: drop a photo, see its three siblings, click one for more like it,
filter by folder, review duplicates. A screenshot of the results page is saved in
``test-output/`` (or ``$IMGVEC_TEST_OUTPUT``)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED_EVAL

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

UKBENCH = SHARED_EVAL / "ukbench140"
WEIGHTS = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"
OUTPUT = Path(
    os.environ.get("IMGVEC_TEST_OUTPUT", Path(__file__).resolve().parent.parent / "test-output")
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    # As root (CI) Chromium's sandbox cannot start; the rest keep it off the (closed) network.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install Debian's chromium"),
    pytest.mark.skipif(not WEIGHTS.exists(), reason="../shared/eval is not present"),
]


def groups() -> dict[str, int]:
    with open(UKBENCH / "groundtruth.csv", newline="") as handle:
        return {row["filename"]: int(row["group_id"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A library of the 140 photos in two folders (groups 0-9 in a/, the rest in b/, plus an
    exact copy in b/), served by the real command; (its address, the photos folder)."""
    root = tmp_path_factory.mktemp("page")
    photos, library = root / "photos", root / "library"
    for name, group in groups().items():
        folder = photos / ("a" if group < 10 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(UKBENCH / "images" / name, folder / name)
    shutil.copy(photos / "b" / "ukbench00050.jpg", photos / "b" / "copy of ukbench00050.jpg")
    env = {**os.environ, "IMGVEC_LIBRARY": str(library)}
    add = [sys.executable, str(RUNNER), "add", str(photos), "--model", "mobilenet_v2"]
    subprocess.run([*add, "--weights", str(WEIGHTS)], env=env, check=True, capture_output=True)
    server = subprocess.Popen(
        [sys.executable, str(RUNNER), "serve", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    line = server.stderr.readline()  # printed once the socket listens
    assert " on http://" in line, line
    try:
        yield line.split(" on ")[1].split()[0], photos
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def page(served: tuple[str, Path]) -> Iterator[object]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        tab.on("pageerror", lambda error: problems.append(str(error)))
        expected = "status of 400"  # the bad filter's answer, logged by the browser

        def console(message) -> None:  # type: ignore[no-untyped-def]
            if message.type == "error" and expected not in message.text:
                problems.append(message.text)

        tab.on("console", console)
        tab.goto(served[0])
        yield tab
        browser.close()
        assert problems == []


def result_paths(tab) -> list[str]:  # type: ignore[no-untyped-def]
    return tab.eval_on_selector_all("#results li", "items => items.map(i => i.dataset.path)")


def drop(tab, path: Path) -> None:  # type: ignore[no-untyped-def]
    """A real drop event on the drop zone, carrying the file as a browser would."""
    tab.evaluate(
        """([name, bytes]) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
            const event = {dataTransfer: data, bubbles: true, cancelable: true};
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", event));
        }""",
        [path.name, list(path.read_bytes())],
    )


def wait_for_query(tab, name: str) -> None:  # type: ignore[no-untyped-def]
    tab.wait_for_function(
        """name => document.querySelector("#query-caption").textContent.includes(name + " · ")
                   && document.querySelectorAll("#results li").length > 0""",
        arg=name,
    )


def test_drop_a_photo_see_its_siblings_click_one_filter_by_folder(page, served) -> None:  # type: ignore[no-untyped-def]
    tab, (_url, photos) = page, served
    group_of = groups()
    tab.wait_for_function("document.querySelector('#status').textContent.includes('141 images')")
    assert "model mobilenet_v2" in tab.text_content("#status")

    query = photos / "a" / "ukbench00004.jpg"
    drop(tab, query)
    wait_for_query(tab, query.name)
    top = [Path(p).name for p in result_paths(tab)[:4]]
    siblings = {n for n, g in group_of.items() if g == group_of[query.name]} - {query.name}
    assert siblings <= set(top), top
    # The thumbnails in view (two rows) have loaded; lazy ones below wait for a scroll.
    tab.wait_for_function(
        "[...document.querySelectorAll('#results li img')].slice(0, 12)"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    OUTPUT.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(OUTPUT / "page-results.png"))
    print(f"screenshot: {OUTPUT / 'page-results.png'}")

    # Click a sibling: more like it, from its stored vector.
    sibling = next(p for p in result_paths(tab)[1:4] if Path(p).name in siblings)
    tab.click(f"#results li[data-path='{sibling}'] button")
    wait_for_query(tab, Path(sibling).name)
    again = [Path(p).name for p in result_paths(tab)[:4]]
    assert again[0] == Path(sibling).name
    assert (siblings | {query.name}) - {Path(sibling).name} <= set(again), again

    # Filter by folder: every result is in b/, the filter line says how many matched.
    tab.fill("#where", "folder LIKE '%/b'")
    tab.press("#where", "Enter")
    tab.wait_for_function("document.querySelector('#query-caption').textContent.includes('match')")
    assert {Path(p).parent.name for p in result_paths(tab)} == {"b"}
    assert "101 images match the filter" in tab.text_content("#query-caption")

    # A bad filter: one line saying why, no results.
    tab.fill("#where", "folder LIKE")
    tab.press("#where", "Enter")
    tab.wait_for_selector("#error:not([hidden])")
    assert "SQL" in tab.text_content("#error") or "where" in tab.text_content("#error").lower()
    assert result_paths(tab) == []


def test_the_duplicates_view_shows_the_copy_and_its_keeper(page) -> None:  # type: ignore[no-untyped-def]
    tab = page
    tab.click("#tab-dupes")
    tab.click("#find-dupes")
    tab.wait_for_function("document.querySelector('#dupes-summary').textContent.includes('among')")
    assert tab.text_content("#dupes-summary").startswith("1 group among 141 images")
    names = tab.eval_on_selector_all(".group .member .name", "n => n.map(x => x.textContent)")
    assert sorted(names) == ["copy of ukbench00050.jpg", "ukbench00050.jpg"]
    assert tab.locator(".group .member.keeper").count() == 1
    assert "exact" in tab.text_content(".group .member:not(.keeper) .tag")


def test_words_reach_the_api_and_its_answer_is_shown(page) -> None:  # type: ignore[no-untyped-def]
    """The library's model (mobilenet_v2) takes no words: the page sends them and shows the
    API's one-line reason, naming the models that do (tests/test_clip.py searches by words)."""
    tab = page
    tab.wait_for_function("document.querySelector('#status').textContent.includes('images')")
    tab.fill("#words", "a red bicycle")
    tab.press("#words", "Enter")
    tab.wait_for_selector("#error:not([hidden])")
    message = tab.text_content("#error")
    assert "mobilenet_v2 takes no words" in message and "clip_vit_b_32" in message
    assert result_paths(tab) == []
    assert tab.text_content("#query-caption") == "a red bicycle"
