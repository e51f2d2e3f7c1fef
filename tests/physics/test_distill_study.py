"""The few-step study's rows are the pre-registered ones, and the study runs only behind a passed gate."""
import json

import pytest

from pnp_kernels import RefinePlan
from pnp_kernels.physics import fewstep_rows, fewstep_study
from pnp_kernels.physics.distill import file_digest
from pnp_kernels.physics.generate import sigma_grid
from pnp_kernels.physics.model import SHIPPED_WEIGHTS
from pnp_kernels.physics.rows import Row, matching_euler
from pnp_kernels.physics.study import measure_row


def test_rows_are_the_pre_registered_ones():
    candidates = fewstep_rows.candidate_rows()
    assert len(candidates) == 6 * 3 * 2
    placements = {r.resolved_plan.ranges[0][:2] for r in candidates}
    assert placements == {(1, 1), (2, 2), (3, 3), (1, 2), (2, 3), (1, 3)}  # every contiguous placement in 1-3
    rows = fewstep_rows.student_rows()
    assert len({r.label() for r in rows}) == len(rows)
    for row in rows:
        if row.kind != "euler":
            assert matching_euler(row, rows).num_steps == row.planned_calls
    equal_calls = next(r for r in rows if r.plan == fewstep_rows.EQUAL_CALLS_PLAN)
    assert equal_calls.planned_calls == 19 and Row("euler", 19) in fewstep_rows.teacher_rows()
    assert {r.planned_calls for r in rows if r.kind == "broken"} == {13}
    assert [r.num_steps for r in fewstep_rows.teacher_rows()][-2:] == [19, 20]
    for reading in fewstep_rows.EMPTY_READINGS:
        assert RefinePlan.parse(reading).resolve(sigma_grid(4)).ranges == ()


def _student(tmp_path, passed=True, digest=None):
    student = tmp_path / "weights.safetensors"
    student.write_bytes(SHIPPED_WEIGHTS.read_bytes())
    record = {"gate": {"passed": passed}, "student_digest": digest or file_digest(student),
              "teacher_digest": file_digest(SHIPPED_WEIGHTS)}
    (tmp_path / "gate.json").write_text(json.dumps(record))
    return student


@pytest.mark.parametrize("passed, digest, match", [
    (False, None, "has not passed"),
    (True, "0" * 64, "has not passed"),  # the gate judged other weights
])
def test_the_study_refuses_a_student_that_has_not_passed_its_gate(tmp_path, monkeypatch, passed, digest, match):
    monkeypatch.setattr(fewstep_study, "measure_row", lambda *args: pytest.fail("a row was sampled"))
    with pytest.raises(ValueError, match=match):
        fewstep_study.run_study(_student(tmp_path, passed, digest))
    (tmp_path / "gate.json").unlink()
    with pytest.raises(ValueError, match="no gate record"):
        fewstep_study.run_study(tmp_path / "weights.safetensors")


def test_rows_are_sampled_once_and_reproduce_exactly(tmp_path, monkeypatch):
    rows = [Row("euler", 4), Row("pnp", 4, plan="f0.3-0.7:1", tau=0.25)]
    monkeypatch.setattr(fewstep_rows, "student_rows", lambda: rows)
    monkeypatch.setattr(fewstep_rows, "teacher_rows", lambda: [Row("euler", 5)])
    seeds = fewstep_study.STUDY_SEEDS[:3]
    out = fewstep_study.run_study(_student(tmp_path), SHIPPED_WEIGHTS, seeds)
    results = json.loads(out.read_text())
    assert list(results["rows"]) == ["student: Euler 4", f"student: {rows[1].label()}", "teacher: Euler 5"]
    again = measure_row(rows[1], list(seeds), fewstep_study.load_weights(SHIPPED_WEIGHTS))
    assert again["metrics"] == results["rows"][f"student: {rows[1].label()}"]["metrics"]
    monkeypatch.setattr(fewstep_study, "measure_row", lambda *args: pytest.fail("a finished row was sampled again"))
    assert fewstep_study.run_study(tmp_path / "weights.safetensors", SHIPPED_WEIGHTS, seeds) == out
