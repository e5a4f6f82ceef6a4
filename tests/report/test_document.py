"""The comparison report: aggregation over seeds, headline claims, transfer table, Markdown, self-contained HTML."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inflow.report.document import (
    aggregate,
    headline_claims,
    render_markdown,
    transfer_table,
    write_report,
)
from inflow.report.html import render_html

TARGETS = ("arithmetic", "facts", "qa")
# mean test loss of each method under qwen2 at 5% (10%: 0.05 lower); every targeted method beats random
LOSS = {"less": 1.0, "bm25": 1.2, "distill": 1.1, "random": 1.5, "in2core": 1.05, "random_in2core": 1.35,
        "full": 1.02}
OWN_BUDGET = {"in2core": 0.5, "random_in2core": 0.5, "full": 1.0}
NOISE = (-0.1, 0.0, 0.1)  # per seed: every group has std 0.1
# in-family, in-family harmful, other, decoy: LESS keeps 0.04 / 0.8 = 5% harmful in-family rows (family: 10%)
SHARES = {"less": (0.8, 0.04, 0.15, 0.05), "bm25": (0.5, 0.05, 0.2, 0.3)}
LLAMA = ("less", "bm25", "random", "in2core", "random_in2core")  # the transfer check: fewer methods, 5% only


def make_rows(shift: Mapping[tuple[str, str], float] | None = None,
              shares: Mapping[tuple[str, str], tuple[float, ...]] | None = None, composition: bool = True,
              drop: tuple[str, ...] = ()) -> list[dict]:
    """Per-seed rows: 3 seeds × qwen2 (5%, 10%) and llama (5%) × 3 targets; ``shift`` adds to a (target, method)'s
    loss, ``shares`` replaces its composition, ``drop`` removes methods. Under llama every loss is 0.2 higher,
    LESS's 0.3 (its improvement over random drops from 0.5 to 0.4)."""
    rows = []
    for seed, noise in enumerate(NOISE):
        for model in ("qwen2", "llama"):
            for target in TARGETS:
                for method in LOSS:
                    if method in drop or (model == "llama" and method not in LLAMA):
                        continue
                    budgets = [OWN_BUDGET[method]] if method in OWN_BUDGET else [0.05, 0.1][:1 + (model == "qwen2")]
                    for budget in budgets:
                        loss = LOSS[method] + noise + (shift or {}).get((target, method), 0.0) - 0.05 * (budget == 0.1)
                        loss += (0.3 if method == "less" else 0.2) if model == "llama" else 0.0
                        row = {"seed": seed, "model": model, "budget": budget, "target": target, "method": method,
                               "test_loss": loss, "exact_match": 0.5, "selection_size": int(1000 * budget),
                               "pool_size": 1000, "selection_seconds": None if method == "random" else 10.0 + seed,
                               "finetune_seconds": 5.0}
                        if composition:
                            own = (shares or {}).get((target, method), SHARES.get(method, (0.3, 0.03, 0.6, 0.1)))
                            row.update(in_family_share=own[0], in_family_harmful_share=own[1], other_share=own[2],
                                       decoy_share=own[3], harmful_share=own[1] + 0.01, family_harmful_rate=0.1)
                        rows.append(row)
    return rows


def find(agg: list[dict], model: str, budget: float, target: str, method: str) -> dict:
    (row,) = [r for r in agg if (r["model"], r["budget"], r["target"], r["method"]) == (model, budget, target, method)]
    return row


def claims_of(rows: list[dict], budget: float = 0.05) -> dict[str, dict]:
    """The claims by their first words: targeted, decoys, harmful, full."""
    claims = headline_claims(aggregate(rows), "qwen2", budget)
    return dict(zip(("targeted", "decoys", "harmful", "full"), claims))


def test_aggregate_mean_std_and_wins_by_hand() -> None:
    rows = [{"seed": s, "model": "m", "budget": 0.05, "target": "qa", "method": method, "test_loss": loss,
             "exact_match": 0.5, "selection_seconds": seconds}
            for s, (less, random, seconds) in enumerate([(1.0, 2.0, 4.0), (3.0, 2.5, None), (2.0, 3.0, 6.0)])
            for method, loss in (("less", less), ("random", random))]
    rows.append({"seed": 3, "model": "m", "budget": 0.05, "target": "qa", "method": "less", "test_loss": 9.0})
    less = find(aggregate(rows), "m", 0.05, "qa", "less")
    assert less["n_seeds"] == 4
    assert less["test_loss_mean"] == pytest.approx(15.0 / 4)
    assert less["test_loss_std"] == pytest.approx(np.std([1.0, 3.0, 2.0, 9.0], ddof=1))
    assert less["exact_match_std"] == 0.0 and less["selection_seconds_mean"] == pytest.approx(5.0)  # None: unknown
    assert (less["beats_random"], less["n_compared"]) == (2, 3)  # seed 3 has no random run: not compared
    assert "decoy_share_mean" not in less  # absent on other pools
    assert "beats_random" not in find(aggregate(rows), "m", 0.05, "qa", "random")


def test_aggregate_matches_baselines_by_budget_seed_and_model() -> None:
    agg = aggregate(make_rows(shift={("qa", "in2core"): 0.35}))  # qa: in2core 1.4 vs random_in2core 1.35
    assert [(r["model"], r["budget"], r["target"], r["method"]) for r in agg] == sorted(
        (r["model"], r["budget"], r["target"], r["method"]) for r in agg)
    arithmetic = find(agg, "qwen2", 0.5, "arithmetic", "in2core")
    assert (arithmetic["beats_random"], arithmetic["n_compared"]) == (3, 3)
    assert find(agg, "qwen2", 0.5, "qa", "in2core")["beats_random"] == 0  # judged by random_in2core, not random
    assert find(agg, "qwen2", 0.1, "qa", "less")["test_loss_mean"] == pytest.approx(0.95)
    assert find(agg, "llama", 0.05, "qa", "less")["test_loss_mean"] == pytest.approx(1.3)
    assert find(agg, "qwen2", 0.05, "qa", "less")["test_loss_std"] == pytest.approx(0.1)
    assert "beats_random" not in find(agg, "qwen2", 1.0, "qa", "full")


def test_aggregate_rejects_duplicates_and_missing_keys() -> None:
    rows = make_rows()
    with pytest.raises(ValueError, match="two result rows"):
        aggregate(rows + rows[:1])
    with pytest.raises(ValueError, match="lacks"):
        aggregate([{"seed": 0, "model": "m", "budget": 0.05, "target": "qa", "method": "less"}])


def test_every_claim_holds_on_the_reference_rows() -> None:
    claims = claims_of(make_rows())
    assert all(c["holds"] is True for c in claims.values()), claims
    assert claims["targeted"]["claim"] == "targeted 5% beats random 5% on every target"
    assert "less: all targets" in claims["targeted"]["evidence"]
    assert "less 0.050 vs bm25 0.300" in claims["decoys"]["evidence"]
    assert "0.050 of LESS's in-family rows are harmful vs 0.100" in claims["harmful"]["evidence"]
    assert claims["full"]["claim"].endswith("at least 2 of 3 targets")
    assert claims_of(make_rows(), 0.1)["targeted"]["claim"] == "targeted 10% beats random 10% on every target"


@pytest.mark.parametrize(("name", "change", "evidence"), [
    ("targeted", {"shift": {("facts", "bm25"): 0.5}}, "bm25: fails on facts (1.7000 vs random 1.5000)"),
    ("decoys", {"shares": {("qa", "less"): (0.5, 0.02, 0.1, 0.4)}}, "qa: less 0.400 vs bm25 0.300"),
    # 6% of the selection is harmful, under the family's 10%, but 12% of the in-family rows: the rate that counts
    ("harmful", {"shares": {("facts", "less"): (0.5, 0.06, 0.4, 0.1)}}, "facts: 0.120 of LESS's"),
    ("full", {"shift": {("facts", "less"): 0.1, ("qa", "less"): 0.1}}, "reached on 1, 2 needed"),
])
def test_each_claim_can_fail(name: str, change: dict, evidence: str) -> None:
    claims = claims_of(make_rows(**change))
    assert claims[name]["holds"] is False
    assert evidence in claims[name]["evidence"]
    assert all(c["holds"] is True for other, c in claims.items() if other != name)


@pytest.mark.parametrize(("drop", "composition", "unmeasured"), [
    (("random",), True, {"targeted"}),
    (("bm25",), True, {"decoys"}),
    (("full",), True, {"full"}),
    ((), False, {"decoys", "harmful"}),
    (("less",), True, {"decoys", "harmful", "full"}),
])
def test_claims_are_not_measured_without_their_rows(drop: tuple[str, ...], composition: bool,
                                                    unmeasured: set[str]) -> None:
    claims = claims_of(make_rows(drop=drop, composition=composition))
    assert {name for name, c in claims.items() if c["holds"] is None} == unmeasured


def test_full_pool_claim_is_decided_with_a_target_missing() -> None:
    rows = [r for r in make_rows() if not (r["method"] == "full" and r["target"] == "qa")]
    assert claims_of(rows)["full"]["holds"] is True  # 2 of the 2 measured targets already reach it
    rows = [r for r in make_rows(shift={("facts", "less"): 0.1}) if not (r["method"] == "full" and r["target"] == "qa")]
    assert claims_of(rows)["full"]["holds"] is None  # 1 reached, the unmeasured one decides


def test_transfer_gap_by_hand() -> None:
    table = transfer_table(aggregate(make_rows()), "qwen2", "llama")
    assert {(t["method"], t["budget"]) for t in table} == {("less", 0.05), ("bm25", 0.05), ("in2core", 0.5)}
    assert len(table) == 9
    less = next(t for t in table if t["target"] == "facts" and t["method"] == "less")
    assert (less["selector_loss"], less["target_loss"]) == (pytest.approx(1.0), pytest.approx(1.3))
    assert less["selector_improvement"] == pytest.approx(0.5) and less["target_improvement"] == pytest.approx(0.4)
    assert less["transfer_gap"] == pytest.approx(0.1)
    in2core = next(t for t in table if t["target"] == "facts" and t["method"] == "in2core")
    assert in2core["selector_improvement"] == pytest.approx(0.3) and in2core["transfer_gap"] == pytest.approx(0.0)
    assert {t["method"] for t in transfer_table(aggregate(make_rows()), "qwen2", "llama", budget=0.5)} == {"in2core"}
    rows = [r for r in make_rows() if not (r["model"] == "llama" and r["method"] == "random")]
    less = next(t for t in transfer_table(aggregate(rows), "qwen2", "llama") if t["method"] == "less")
    assert less["target_improvement"] is None and less["transfer_gap"] is None
    with pytest.raises(ValueError, match="two different models"):
        transfer_table(aggregate(make_rows()), "qwen2", "qwen2")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    scores = {m: {t: rng.normal(size=60) for t in TARGETS} for m in ("less", "bm25")}
    return write_report(make_rows(), tmp_path_factory.mktemp("report"), scores=scores)


def test_write_report_writes_every_file_and_picks_defaults(report: dict[str, Path]) -> None:
    assert {"markdown", "html", "results", "loss_vs_budget", "composition", "score_histograms", "compute_vs_quality",
            "transfer"} == set(report)
    assert all(path.is_file() for path in report.values())
    results = json.loads(report["results"].read_text())
    assert (results["default_model"], results["default_budget"], results["selector_model"]) == ("qwen2", 0.05,
                                                                                                 "qwen2")
    assert len(results["rows"]) == len(aggregate(make_rows())) and len(results["claims"]) == 4
    assert len(results["transfer"]) == 9


def test_markdown_has_every_method_and_table(report: dict[str, Path]) -> None:
    text = report["markdown"].read_text()
    for method in LOSS:
        assert f"| {method} |" in text
    for header in ("| target | method | budget | test loss | exact match | k | < random |", "in-family (precision)",
                   "| method | budget | selection (s) | fine-tune (s) |", "| improvement qwen2 | improvement llama |"):
        assert header in text
    assert "| arithmetic | less | 5% | 1.0000 ± 0.1000 | 0.500 ± 0.000 | 50 | 3/3 |" in text
    assert "1.3000 ± 0.1000" not in text  # llama's LESS loss: the results table shows the default model only
    assert "| less | 5% | 11.0 | 5.0 |" in text and "| random | 5% |  | 5.0 |" in text  # random's time unknown
    assert text.count("**holds**") == 4
    assert "![Score distributions over the pool](score_histograms.png)" in text


def test_markdown_leaves_out_sections_without_data() -> None:
    agg = aggregate([{k: v for k, v in r.items() if not k.endswith("seconds")}
                     for r in make_rows(composition=False)])
    text = render_markdown(agg, headline_claims(agg, "qwen2", 0.05), [], {}, "T", "intro text", model="qwen2")
    assert text.startswith("# T\n\nintro text")
    for section in ("Composition", "Compute", "Transfer", "Figures"):
        assert f"## {section}" not in text
    assert "not measured" in text and "## Results" in text


def test_html_is_self_contained_with_tables_and_decodable_images(report: dict[str, Path]) -> None:
    page = report["html"].read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    rest = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page)
    assert "href=" not in rest and "url(" not in rest and "http" not in rest
    assert page.count("<table>") == 4 and "<th>test loss</th>" not in page  # numeric headers are right-aligned
    assert '<th style="text-align:right">test loss</th>' in page and "<th>method</th>" in page
    assert "&lt; random" in page and "<strong>holds</strong>" in page and "<code>qwen2</code>" in page
    assert page.count("<figure><img ") == 5
    for source in sources:
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))
        assert image.shape[0] > 100 and image.std() > 0


def test_html_converter_blocks_and_missing_images(tmp_path: Path) -> None:
    text = "# Title\n\nline one\nline two with `a<b`\n\n- **x** y\n- z\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n"
    page = render_html(text, tmp_path)
    assert "<title>Title</title>" in page and "<h1>Title</h1>" in page
    assert "<p>line one line two with <code>a&lt;b</code></p>" in page
    assert "<ul>\n<li><strong>x</strong> y</li>\n<li>z</li>\n</ul>" in page
    assert '<tr><td>1</td><td style="text-align:right">2</td></tr>' in page
    with pytest.raises(ValueError, match="not a PNG file"):
        render_html("![c](missing.png)\n", tmp_path)


def test_write_report_refuses_defaults_without_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no result rows"):
        write_report([], tmp_path)
    with pytest.raises(ValueError, match="default model 'gpt' has no rows"):
        write_report(make_rows(), tmp_path, default_model="gpt")
    with pytest.raises(ValueError, match="default budget 0.2 has no rows"):
        write_report(make_rows(), tmp_path, default_budget=0.2)
    assert not list(tmp_path.iterdir())  # refused before writing anything
