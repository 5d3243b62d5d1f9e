"""The web playground at `/`, driven in a real headless Chromium through Selenium.

The page is checked against the API itself: the same greedy request sent directly to
`/v1/chat/completions` gives the text the page must show, the step trace (`: dlm.step` lines)
gives the sequence of block states the page's block view must pass through, one by one, and the
forward-pass count it must report. Debian's `chromium` and `chromium-driver` are installed when
missing; Selenium is pointed at them explicitly and runs offline (no Selenium Manager download).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import httpx
import pytest

from conftest import REPO, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO / "target" / "playground.png"
PROMPT = "Tell me a story about a cat."
KEY = "playground-key"
# What the test sets in the page's controls, and sends to the API directly.
SETTINGS = {"block_size": 16, "small_block_size": 8, "threshold": 0.9, "temperature": 0, "max_tokens": 48}
FIELDS = {
    "block_size": "block-size",
    "small_block_size": "sub-block-size",
    "threshold": "threshold",
    "temperature": "temperature",
    "max_tokens": "max-tokens",
}

# Records the block row after every change the page makes to it (installed by the test, so the
# page cannot fake it): the step it claims, which cells are masks, what the others show.
OBSERVE_ROW = """
window.__rows = [];
{
const row = document.getElementById("block-row");
if (window.__observer) window.__observer.disconnect();
window.__observer = new MutationObserver(() => {
  const cells = [...row.children];
  window.__rows.push({
    step: Number(row.dataset.step),
    block: Number(row.dataset.block),
    masked: cells.map((c) => c.classList.contains("mask")),
    text: cells.map((c) => (c.classList.contains("mask") ? null : c.textContent)),
  });
});
window.__observer.observe(row, {childList: true, subtree: true, attributes: true, characterData: true});
}
"""


# Makes the page receive each chat stream in one piece, all steps at once (as from a buffering
# proxy, or a server faster than the screen): a view that draws only once per animation frame
# would then show the last step alone.
BUFFER_STREAMS = """
window.__realFetch = window.__realFetch || window.fetch;
window.fetch = async (...args) => {
  const resp = await window.__realFetch(...args);
  if (!String(args[0]).includes("/v1/chat/completions")) return resp;
  const body = await resp.arrayBuffer();
  return new Response(body, {status: resp.status, statusText: resp.statusText, headers: resp.headers});
};
"""


def _install_chromium() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.fail("chromium and chromedriver are missing and there is no apt-get to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _install_chromium()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1400,1250",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo(default_server):
    """The bundled demo DLM, as `dlm_server` starts with no flags."""
    return default_server


# -- the API, asked directly --------------------------------------------------------------------


def shown(piece: str) -> str:
    """How the page writes a token piece in a cell (playground.js `showPiece`)."""
    if piece == "":
        return "\u2205"
    if piece.strip() == "":
        return piece.replace("\n", "\u21b5").replace(" ", "\u2423")
    return piece.replace("\n", "\u21b5")


def api_body(mode: str = "dlm", **extra) -> Dict:
    body = {"messages": [{"role": "user", "content": PROMPT}], "mode": mode,
            "temperature": 0, "max_tokens": SETTINGS["max_tokens"]}
    if mode == "dlm":
        body.update(SETTINGS)
    body.update(extra)
    return body


def api_answer(url: str, body: Dict, key: str = "") -> Dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def api_trace(url: str, body: Dict) -> Tuple[List[Dict], str]:
    """The `: dlm.step` objects and the streamed text of a traced streaming request."""
    body = dict(body, stream=True, stream_options={"include_steps": True})
    steps, text = [], ""
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith(": dlm.step "):
                steps.append(json.loads(line[len(": dlm.step "):]))
            elif line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                for c in chunk.get("choices", []):
                    text += c["delta"].get("content") or ""
    return steps, text


# -- the page -----------------------------------------------------------------------------------


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30, what="page load")


def set_controls(driver, mode: str = "dlm", **values) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, f"mode-{mode}").click()
    for name, value in {**SETTINGS, **values}.items():
        field = driver.find_element(By.ID, FIELDS[name])
        field.clear()
        field.send_keys(str(value))


def send_prompt(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def idle(driver) -> bool:
    return driver.execute_script(
        "return document.getElementById('send').textContent === 'Send'"
        " && !document.querySelector('.msg.pending')"
    )


def last_answer(driver) -> str:
    return driver.execute_script(
        "const m = [...document.querySelectorAll('.msg.assistant .text')]; return m.length ? m[m.length - 1].textContent : null"
    )


def shown_error(driver) -> str:
    return driver.execute_script("const e = document.getElementById('error'); return e.hidden ? '' : e.textContent")


def stat(driver, name: str) -> str:
    return driver.execute_script(f"return document.querySelector('#stats dd[data-stat=\"{name}\"]').textContent")


def page_problems(driver) -> List[str]:
    """Browser console errors other than the failed API calls the tests provoke on purpose."""
    out = []
    for entry in driver.get_log("browser"):
        msg = entry["message"]
        if entry["level"] != "SEVERE":
            continue
        if "Failed to load resource" in msg and ("status of 400" in msg or "status of 401" in msg):
            continue
        out.append(msg)
    return out


def assert_every_step_shown(driver, steps: List[Dict]) -> None:
    """The block row passed through every step of the trace, in order, one state per step."""
    rows = [r for r in driver.execute_script("return window.__rows") if r["step"] > 0]
    seen = []
    for r in rows:
        if not seen or seen[-1] != r:
            seen.append(r)
    assert [(r["step"], r["masked"]) for r in seen] == [(s["step"], s["masked"]) for s in steps], (
        f"the view showed {len(seen)} states for {len(steps)} steps: "
        f"{[(r['step'], sum(r['masked'])) for r in seen]}"
    )
    masks = [sum(r["masked"]) for r in seen]
    assert max(masks) > 0 and masks[-1] == 0, masks
    # Within a block the masks never come back (a block's finalizing pass may commit nothing);
    # every cell shows the trace's piece (masks show none).
    for a, b in zip(seen, seen[1:]):
        if a["block"] == b["block"]:
            assert sum(b["masked"]) <= sum(a["masked"]), (a, b)
    assert len(set(masks)) >= 3, f"the mask count took fewer than 3 values: {masks}"
    for r, s in zip(seen, steps):
        assert r["block"] == s["block"]
        assert r["text"] == [None if m else shown(p) for m, p in zip(s["masked"], s["pieces"])], (r, s)


# -- tests --------------------------------------------------------------------------------------


def test_page_and_assets_are_served_with_types_and_csp(demo):
    r = httpx.get(demo.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert '<script src="/playground/playground.js"' in r.text
    for path, ctype in [
        ("/playground/playground.js", "text/javascript; charset=utf-8"),
        ("/playground/playground.css", "text/css; charset=utf-8"),
        ("/playground/icon.svg", "image/svg+xml"),
    ]:
        a = httpx.get(demo.url + path, timeout=10)
        assert a.status_code == 200 and a.headers["content-type"] == ctype, path
        assert a.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(demo.url + "/playground/nope.js", timeout=10).status_code == 404


def test_dlm_answer_shows_every_step_then_the_api_text(browser, demo, report_figures):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    # End the answer on a block boundary, so that its last block is decoded to the end (an answer
    # cut by max_tokens inside a block leaves that block's tail masked, and the page shows it so).
    probe, _ = api_trace(demo.url, api_body(max_tokens=1))
    prompt_len = probe[0]["block_start"] + probe[0]["prompt_len_in_block"]
    block = SETTINGS["block_size"]
    max_tokens = -prompt_len % block + 3 * block
    steps, streamed = api_trace(demo.url, api_body(max_tokens=max_tokens))
    expected = api_answer(demo.url, api_body(max_tokens=max_tokens))
    text = expected["choices"][0]["message"]["content"]
    assert streamed == text, "the traced stream and the plain answer disagree"
    assert len(steps) >= 3, f"the reference trace has only {len(steps)} steps"
    assert any(sum(s["masked"]) > 0 for s in steps), "the reference trace never shows a mask"

    open_page(browser, demo.url)
    wait_for(lambda: browser.execute_script("return document.getElementById('model').options.length") > 0,
             30, what="the model list from /v1/models")
    set_controls(browser, max_tokens=max_tokens)

    # First with the whole stream arriving at once and no slow motion: still one state per step.
    Select(browser.find_element(By.ID, "pace")).select_by_value("0")
    browser.execute_script(BUFFER_STREAMS + OBSERVE_ROW)
    send_prompt(browser, PROMPT)
    wait_for(lambda: idle(browser), 120, what="the buffered answer to finish")
    browser.execute_script("window.fetch = window.__realFetch")
    assert shown_error(browser) == ""
    assert_every_step_shown(browser, steps)
    assert last_answer(browser) == text

    # Then live, as it streams, in the default slow motion.
    browser.find_element(By.ID, "new-chat").click()
    Select(browser.find_element(By.ID, "pace")).select_by_value("40")
    browser.execute_script(OBSERVE_ROW)
    send_prompt(browser, PROMPT)
    wait_for(lambda: idle(browser), 120, what="the answer to finish")
    assert shown_error(browser) == ""
    assert_every_step_shown(browser, steps)
    # The text equals what the API answers for the same greedy request.
    assert last_answer(browser) == text
    # Finished blocks scrolled into the block transcript; the numbers are the API's.
    lines = browser.find_elements(By.CSS_SELECTOR, "#blocks .block-line")
    assert len(lines) == sum(1 for s in steps if s["final"])
    assert stat(browser, "forward passes") == str(expected["timings"]["forward_passes"])
    assert stat(browser, "diffusion steps") == str(len(steps))
    assert stat(browser, "tokens") == str(expected["usage"]["completion_tokens"])
    assert float(stat(browser, "tokens / s")) > 0

    # The replay slider: back to the first step, then one forward.
    slider = browser.find_element(By.ID, "step-slider")
    slider.send_keys(Keys.HOME)
    slider.send_keys(Keys.ARROW_RIGHT)
    row = browser.execute_script(
        "const r = document.getElementById('block-row');"
        "return {step: Number(r.dataset.step), masked: [...r.children].map(c => c.classList.contains('mask'))}"
    )
    assert row == {"step": steps[0]["step"], "masked": steps[0]["masked"]}
    slider.send_keys(Keys.END)

    # Compare with AR: the same prompt autoregressively, both speeds side by side.
    ar = api_answer(demo.url, api_body("ar", max_tokens=max_tokens))
    browser.find_element(By.ID, "compare").click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#compare-result .speed")) == 2 and idle(browser),
             120, what="the AR comparison")
    speeds = {e.get_attribute("data-mode"): float(e.get_attribute("data-tokens-per-second"))
              for e in browser.find_elements(By.CSS_SELECTOR, "#compare-result .speed")}
    assert set(speeds) == {"dlm", "ar"} and all(v > 0 for v in speeds.values()), speeds
    table = browser.find_element(By.CSS_SELECTOR, "#compare-result table").text
    assert f"forward passes {expected['timings']['forward_passes']} {ar['timings']['forward_passes']}" in table, table
    assert shown_error(browser) == ""
    assert page_problems(browser) == []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    report_figures(
        "playground (demo DLM, headless chromium)",
        f"{len(steps)} steps, {expected['timings']['forward_passes']} forward passes, "
        f"{expected['usage']['completion_tokens']} tokens; page speeds DLM {speeds['dlm']:.0f} vs AR "
        f"{speeds['ar']:.0f} tokens/s, DLM time to first token {stat(browser, 'time to first token')}; "
        f"screenshot {SCREENSHOT.relative_to(REPO)}",
    )


def test_api_error_is_shown_with_its_message(browser, demo):
    r = httpx.post(demo.url + "/v1/chat/completions", json=api_body(threshold=2), timeout=30)
    assert r.status_code == 400
    message = r.json()["error"]["message"]

    open_page(browser, demo.url)
    set_controls(browser, threshold=2)
    send_prompt(browser, PROMPT)
    wait_for(lambda: shown_error(browser), 30, what="the error message")
    assert shown_error(browser) == message
    assert idle(browser)
    # The page is still usable: a valid request afterwards answers.
    set_controls(browser)
    send_prompt(browser, PROMPT)
    wait_for(lambda: idle(browser) and last_answer(browser), 120, what="an answer after the error")
    assert shown_error(browser) == ""
    assert last_answer(browser) == api_answer(demo.url, api_body())["choices"][0]["message"]["content"]


def test_api_key_is_asked_for_and_sent(browser, start_server):
    from selenium.webdriver.common.by import By

    server = start_server("playground-key", "--api-key", KEY)
    # The page and its assets load without the key; the API needs it.
    assert httpx.get(server.url + "/", timeout=10).status_code == 200
    assert httpx.get(server.url + "/playground/playground.js", timeout=10).status_code == 200
    refused = httpx.get(server.url + "/v1/models", timeout=10)
    assert refused.status_code == 401

    browser.get("about:blank")
    browser.delete_all_cookies()
    open_page(browser, server.url)
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait_for(lambda: browser.find_element(By.ID, "key-panel").is_displayed(), 30, what="the API key prompt")
    set_controls(browser)
    send_prompt(browser, PROMPT)
    wait_for(lambda: shown_error(browser), 30, what="the 401 message")
    assert shown_error(browser) == refused.json()["error"]["message"]

    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "api-key-save").click()
    wait_for(lambda: browser.execute_script("return document.getElementById('model').options.length") > 0,
             30, what="the model list with the key")
    assert not browser.find_element(By.ID, "key-panel").is_displayed()
    send_prompt(browser, PROMPT)
    wait_for(lambda: idle(browser) and last_answer(browser), 120, what="an answer with the key")
    assert shown_error(browser) == ""
    assert last_answer(browser) == api_answer(server.url, api_body(), key=KEY)["choices"][0]["message"]["content"]
    assert browser.execute_script("return sessionStorage.getItem('dlm.apiKey')") == KEY
