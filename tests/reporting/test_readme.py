"""The README's results are generated from the demo's runs: the committed README must equal what its record
renders, the record must equal a fresh demo's run folders when they are present, and a hand edit fails."""

import json
from pathlib import Path

import pytest

from lightning_search.commands import readme as readme_command
from lightning_search.errors import ConfigurationError
from lightning_search.reporting import readme

ROOT = Path(__file__).resolve().parents[2]
DEMO_RUNS = ROOT / "runs" / "digits"


def test_committed_readme_is_what_its_records_render():
    assert readme.readme_problems(ROOT / "README.md", ROOT, fresh=False) == []
    marked = set(readme.MARK.findall((ROOT / "README.md").read_text()))
    assert marked == {name for world in readme.WORLDS.values() for name in world.blocks}
    assert set(readme.render_all(ROOT)) <= marked


@pytest.mark.skipif(not (DEMO_RUNS / "sweep" / "scaling.csv").is_file(), reason="no make demo run in this checkout")
def test_records_equal_this_checkouts_demo_runs():
    """After `make demo`, the README's numbers are that demo's (a stale README or record fails here)."""
    assert readme.readme_problems(ROOT / "README.md", ROOT) == []


def _fake_runs(root: Path, is_n16: float = 9.03) -> Path:
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    header = "group,name,nfe,inception_score,fid,recall,accuracy,score/classifier,score/oracle,search_score\n"
    rows = ["steps,steps-nfe10,10,7.80,4.05,0.73,0.95,11.5,7.6,\n",
            f"random,random-classifier-n16,160,{is_n16},9.71,0.42,0.98,15.91,9.27,15.91\n"]  # fmt: skip
    (sweep / "scaling.csv").write_text(header + "".join(rows))
    (sweep / "report.md").write_text(
        "# t\n\n## The paper's findings on this run\n\n- reproduced: search keeps scaling\n\n"
        "## Reward per NFE\n\n| N | x |\n|---|---|\n| 16 | 16.33 | random |\n\n## All points\n"
    )
    base = root / "dpo" / "compare" / "base"
    base.mkdir(parents=True)
    (base / "metrics.json").write_text(json.dumps({"nfe": 10, "verifier_scores": {"classifier": 13.9}, "fid": 3.9}))
    return root


def _readme(path: Path) -> Path:
    path.write_text(
        "# x\n\n<!-- generated: digits-table -->\nold\n<!-- end generated -->\n\n"
        "<!-- generated: digits-finetune -->\nold\n<!-- end generated -->\n"
    )
    return path


def test_readme_command_writes_then_checks(tmp_path):
    runs, page = _fake_runs(tmp_path / "runs" / "digits"), _readme(tmp_path / "README.md")
    args = ["--root", str(tmp_path)]
    readme_command(args)
    assert json.loads((tmp_path / readme.RECORD).read_text())["points"]["random-classifier-n16"]["nfe"] == 160
    text = page.read_text()
    assert "| random search N = 16 | 160 | 9.03 | 9.71 | 0.42 | 0.980 | 15.91 | 9.27 |" in text
    assert "| base | 10 | 13.90 |" in text and "old" not in text
    readme_command([*args, "--check"])  # agrees: no error

    page.write_text(text.replace("9.03", "9.30"))  # a number typed by hand
    with pytest.raises(ConfigurationError, match="differs from what"):
        readme_command([*args, "--check"])
    page.write_text(text)
    (runs / "sweep" / "scaling.csv").write_text((runs / "sweep" / "scaling.csv").read_text().replace("9.03", "9.5"))
    with pytest.raises(ConfigurationError, match="digits-table"):  # a fresh run the README was not made from
        readme_command([*args, "--check"])


def test_a_block_without_a_generator_is_an_error():
    with pytest.raises(ConfigurationError, match="no generator"):
        readme.apply("<!-- generated: shapes-nonsense -->\nx\n<!-- end generated -->", {"digits-table": ""})


def test_without_a_demo_the_command_says_what_to_run(tmp_path):
    _readme(tmp_path / "README.md")
    with pytest.raises(ConfigurationError, match="make demo"):
        readme_command(["--root", str(tmp_path)])


def test_the_shapes_blocks_come_from_the_shapes_runs(tmp_path):
    sweep = tmp_path / "runs" / "shapes" / "sweep"
    sweep.mkdir(parents=True)
    tasks = readme.SHAPES_TASKS
    header = "name,nfe,gflops,score/clip,score/judge," + ",".join(f"score/judge_{t}" for t in tasks) + "\n"
    (sweep / "scaling.csv").write_text(header + "big-nfe20,20,3.95,1.70,0.3233," + ",".join(["0.5"] * 6) + "\n")
    run = tmp_path / "runs" / "shapes" / "compare" / "grpo"
    run.mkdir(parents=True)
    scores = {"clip": 1.6, "judge": 0.347, **{f"judge_{t}": 0.25 for t in tasks}}
    (run / "metrics.json").write_text(json.dumps({"nfe": 10, "gflops": 0.66, "verifier_scores": scores}))
    page = tmp_path / "README.md"
    page.write_text("<!-- generated: shapes-sweep -->\n<!-- end generated -->\n"
                    "<!-- generated: shapes-finetune -->\n<!-- end generated -->\n")  # fmt: skip
    readme_command(["--root", str(tmp_path)])
    text = page.read_text()
    assert "| big (3.0x GFLOPs / NFE), no search, 20 NFE | 20 | 4.0 | **0.32** | 0.50 |" in text
    assert "| grpo | 10 | 0.7 | **0.35** | 0.25 |" in text
    assert (tmp_path / "docs" / "results" / "shapes.json").is_file()
    readme_command(["--root", str(tmp_path), "--check"])
