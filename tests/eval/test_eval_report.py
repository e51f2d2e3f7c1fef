"""The report from hand-made sample records: paired means, undefined values, strict JSON, figures."""
import json

import numpy as np
import pytest

from pnp_kernels.eval import report
from pnp_kernels.eval.metrics import Metric
from pnp_kernels.eval.runner import Sample

METRICS = [Metric("a", "higher", "", "a"), Metric("flicker", "lower", "", "flicker"),
           Metric("frame_change", "neutral", "", "change")]
HEADER = {"model": "test model", "num_prompts": 1, "num_seeds": 3, "steps": 4, "notice": ""}


def record(seed, baseline, setting):
    def run(values, nfe):
        return {"nfe": nfe, "time_s": 0.5, "metrics": dict(zip(("a", "flicker", "frame_change"), values))}

    return {"prompt": "p", "seed": seed, "runs": {"baseline": run(baseline, 4), "P&P": run(setting, 7)}}


def test_summary_pairs_samples_and_leaves_out_undefined_values(tmp_path):
    records = [record(0, (1.0, np.nan, 0.0), (3.0, 0.5, 0.2)),
               record(1, (2.0, 0.01, 0.0), (np.nan, 0.02, 0.1)),
               record(2, (4.0, 0.04, 0.0), (4.5, 0.01, 0.3))]
    summary = report.summarize(records, "baseline", ["P&P"], METRICS, HEADER)
    a = summary["comparisons"]["P&P"]["metrics"]["a"]
    # seed 1 has no value for the setting: both means and the difference use seeds 0 and 2 only
    assert (a["baseline_mean"], a["setting_mean"]) == (2.5, 3.75)
    assert a["difference"]["n"] == 2 and a["difference"]["mean"] == pytest.approx(1.25)
    assert summary["comparisons"]["P&P"]["nfe_mean"] == 7 and summary["baseline"]["nfe_mean"] == 4
    # flicker above the flag: the setting's 0.5 and the baseline's 0.04
    assert summary["comparisons"]["P&P"]["flicker_flagged"] == 1 and summary["baseline"]["flicker_flagged"] == 1
    assert summary["samples"][2]["differences"]["P&P"]["a"] == pytest.approx(0.5)

    samples = [Sample("p", seed) for seed in range(3)]
    thumbs = [np.random.default_rng(seed).integers(0, 256, (2, 3, 9, 11, 3), dtype=np.uint8) for seed in range(3)]
    paths = report.write_report(summary, samples, thumbs, tmp_path)
    assert all(path.stat().st_size > 0 for path in paths.values())
    written = json.loads(paths["json"].read_text(), parse_constant=pytest.fail)
    assert written["samples"][0]["runs"]["baseline"]["metrics"]["flicker"] is None
    table = paths["markdown"].read_text()
    assert "| a | higher | 2.5 | 3.75 | 1.25 [" in table and "| 2 |" in table


def test_metric_undefined_everywhere_is_reported_as_nan():
    records = [record(seed, (1.0, np.nan, 0.0), (1.0, np.nan, 0.1)) for seed in range(2)]
    summary = report.summarize(records, "baseline", ["P&P"], METRICS, HEADER)
    assert summary["comparisons"]["P&P"]["metrics"]["flicker"]["difference"]["n"] == 0
    assert "| flicker | lower | nan | nan | nan [nan, nan] | 0 |" in report.markdown(summary)
