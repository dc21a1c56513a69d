"""The compare page fits the window: checked on its HTML structure and CSS (no browser). A page overflows
horizontally when an element wider than the window is neither scaled down (images: ``max-width: 100%``) nor
inside a box that scrolls on its own (tables: ``overflow-x: auto``), or when something has a fixed width
wider than the narrowest window checked (768 px)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from lightning_search.reporting.compare import write_comparison
from lightning_search.runs import image_to_png_bytes

NAMES = ["base", "dpo", "base+search-random-N16", "dpo+search-random-N16", "grpo-lora-rank4", "grpo+search"]
GENEVAL = {"prompt": "a photo of two clocks", "tag": "counting", "include": [{"class": "clock", "count": 2}]}
CONDITIONS = ["a red cat " * 30, GENEVAL, "supercalifragilistic" * 10]


def _fake_run(folder: Path, k: int) -> Path:
    """A finished run folder: metrics.json with many verifiers and metrics, 6 samples of 3 conditions."""
    g = torch.Generator().manual_seed(k)
    records = []
    for sid in range(6):
        image = f"images/{sid:06d}.png"
        (folder / "predictions" / "images").mkdir(parents=True, exist_ok=True)
        (folder / "predictions" / image).write_bytes(image_to_png_bytes(torch.rand(3, 16, 16, generator=g)))
        scores = {"clip_score": 0.5 + k / 100, "hps": 0.2, "image_reward": k / 10 - 0.3, "pickscore": 21.3}
        records.append({"sample_id": sid, "condition": CONDITIONS[sid // 2], "image": image, "scores": scores})
    (folder / "predictions" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    verifier_scores = {"clip_score": 0.5, "hps": 0.2, "image_reward": 0.1, "pickscore": 21.3, "aesthetic": 5.1}
    metrics = {"algorithm": "random", "verifier": "clip_score", "nfe": 10 * (k + 1), "gflops": 12.5 * k,
               "num_samples": 6, "verifier_scores": verifier_scores, "search_score": 0.6, "inception_score": 8.0,
               "fid": 6.0, "kid": 0.01, "precision": 0.7, "recall": 0.6, "accuracy": 0.9}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


class Page(HTMLParser):
    """Every element with its attributes and its ancestors' tags and classes; the text of <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.elements: list[tuple[str, dict, list[tuple[str, dict]]]] = []
        self.css = ""
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs, list(self.stack)))
        if tag not in ("img", "meta", "br", "link"):
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.stack and self.stack[-1][0] == "style":
            self.css += data
        else:
            self.texts.append(data)


def _rules(css: str) -> dict[str, dict[str, str]]:
    """{selector: {property: value}} of plain CSS rules (media queries flattened)."""
    css = re.sub(r"@media[^{]*\{((?:[^{}]*\{[^}]*\})*)\s*\}", r"\1", css)
    rules: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        declarations = dict((p.strip(), v.strip()) for p, v in (d.split(":", 1) for d in body.split(";") if ":" in d))
        for selector in selectors.split(","):
            rules.setdefault(selector.strip(), {}).update(declarations)
    return rules


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Page, Path]:
    tmp = tmp_path_factory.mktemp("compare_page")
    runs = [_fake_run(tmp / name, k) for k, name in enumerate(NAMES)]
    write_comparison(tmp / "out", runs, NAMES, "A comparison of six runs " * 4)
    parsed = Page()
    parsed.feed((tmp / "out" / "report.html").read_text())
    return parsed, tmp / "out"


def test_the_page_declares_the_device_width(page):
    parsed, _ = page
    viewport = [a for tag, a, _ in parsed.elements if tag == "meta" and a.get("name") == "viewport"]
    assert viewport and "width=device-width" in viewport[0]["content"]


def test_every_table_scrolls_inside_its_own_box(page):
    parsed, _ = page
    rules = _rules(parsed.css)
    assert rules[".scroll"]["overflow-x"] == "auto" and rules[".scroll"]["max-width"] == "100%"
    tables = [(a, parents) for tag, a, parents in parsed.elements if tag == "table"]
    assert len(tables) == 2  # the metrics table and the sample-by-sample table
    for _, parents in tables:
        tag, attrs = parents[-1]
        assert tag == "div" and "scroll" in attrs.get("class", "").split()


def test_images_and_charts_scale_to_the_window(page):
    parsed, out = page
    rules = _rules(parsed.css)
    assert rules["img"]["max-width"] == "100%" and rules["img"]["height"] == "auto"  # aspect ratio kept
    assert rules["*"]["box-sizing"] == "border-box"  # padding never adds to a 100% width
    images = [(a, parents) for tag, a, parents in parsed.elements if tag == "img"]
    charts = [(a, parents) for a, parents in images if a["src"] in ("bars.png", "grid.png")]
    assert {a["src"] for a, _ in charts} == {"bars.png", "grid.png"}
    for attrs, _ in images:
        assert "width" not in attrs and "style" not in attrs  # no fixed size that would beat the CSS
        assert (out / attrs["src"]).is_file() and attrs.get("alt")
    for _, parents in charts:
        assert not any(tag == "table" for tag, _ in parents)  # scaled by max-width, not inside a table


def test_no_fixed_width_wider_than_the_narrowest_window(page):
    parsed, _ = page
    for selector, declarations in _rules(parsed.css).items():
        for prop in ("width", "min-width"):
            value = declarations.get(prop, "")
            px = re.fullmatch(r"([\d.]+)px", value)
            em = re.fullmatch(r"([\d.]+)em", value)
            assert not px or float(px.group(1)) <= 768, (selector, prop, value)
            assert not em or float(em.group(1)) * 16 <= 768, (selector, prop, value)  # 16 px per em
    assert "nowrap" not in _rules(parsed.css).get("body", {}).get("white-space", "")
    assert _rules(parsed.css)["body"]["overflow-wrap"] == "anywhere"  # long words and prompts break


def test_dict_conditions_show_their_prompt_and_keep_the_metadata(page):
    parsed, _ = page
    spans = [a for tag, a, parents in parsed.elements if tag == "span" and "title" in a]
    assert spans and json.loads(spans[0]["title"]) == GENEVAL
    assert "a photo of two clocks" in parsed.texts


def test_every_bar_label_stays_inside_its_panel():
    """The value printed on the tallest bar sat on the panel's top edge (a negative score is labelled too)."""
    from lightning_search.reporting.compare import bars_figure

    # the digits compare's eight panels (their heights decide the margin in pixels), one score negative
    values = {"score/classifier": (13.9, 16.56, 19.49), "score/oracle": (7.4, -2.5, 9.47), "inception_score":
              (7.82, 8.56, 9.11), "fid": (3.92, 4.85, 16.75), "kid": (0.87, 1.99, 21.59), "precision":
              (0.947, 0.935, 0.961), "recall": (0.72, 0.67, 0.42), "accuracy": (0.933, 0.966, 0.985)}  # fmt: skip
    rows = [{"name": f"run{k}", **{key: v[k] for key, v in values.items()}} for k in range(3)]
    fig = bars_figure(rows)
    fig.canvas.draw()
    assert len(fig.axes) == 8
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text()]
        assert len(labels) == 3
        panel = ax.get_window_extent()
        for text in labels:
            box = text.get_window_extent()
            # inside, and clear of the top edge by half a label's height (it was 1.5-2 px, touching the frame)
            assert panel.y0 <= box.y0 and box.y1 + box.height / 2 <= panel.y1, (ax.get_title(), text.get_text())
