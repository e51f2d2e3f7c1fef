"""The few-step student's quality gate: each pre-registered check passes and fails where it should."""
import json

import pytest

from pnp_kernels.physics import fewstep_gate
from pnp_kernels.physics.model import SHIPPED_WEIGHTS


def rows(**four):
    base = {"tracked": 0.75, "blank": 0.01, "partly_blank": 0.05, "permanence": 0.03, "size": 0.03}
    student = {n: dict(base) for n in (2, 4, 6, 8)}
    student[4].update(four)
    teacher = {n: dict(base) for n in (4, 6, 8, 20)}
    teacher[20].update(tracked=0.80, blank=0.0, permanence=0.11)
    return student, teacher


REAL = {"permanence": 0.0, "size": 0.002}


def test_a_student_within_every_limit_passes():
    student, teacher = rows(permanence=0.135)
    gate = fewstep_gate.judge(student, teacher, REAL)
    assert gate["passed"] and len(gate["checks"]) == 6


@pytest.mark.parametrize("change, failed", [
    ({"tracked": 0.69}, "G1 tracked"),  # more than 0.10 below the teacher's 0.80
    ({"blank": 0.03}, "G2 blank"),  # more than 0.02 above the teacher's 0.0
    ({"permanence": 0.15}, "G3 permanence"),  # more than 0.03 above the teacher's 0.11
    ({"size": 0.051}, "G3 size"),  # above the 0.05 floor (3x the real clips' 0.002 is lower)
    ({"tracked": 0.86}, "G4 tracked at 6"),  # 6 and 8 steps (0.75) fall more than 0.05 below 4 steps
])
def test_each_check_fails_on_its_own(change, failed):
    student, teacher = rows(**change)
    gate = fewstep_gate.judge(student, teacher, REAL)
    assert not gate["passed"]
    assert [name for name, check in gate["checks"].items() if not check["passed"]][0] == failed


def test_the_gate_samples_every_row_on_held_out_seeds(tmp_path):
    seeds = fewstep_gate.GATE_SEEDS[:3]
    result = fewstep_gate.run_gate(SHIPPED_WEIGHTS, SHIPPED_WEIGHTS, seeds)  # the teacher as its own student
    assert result["seeds"] == 3 and set(result["student_rows"]) == {2, 4, 6, 8} and set(result["teacher_rows"]) == {4, 6, 8, 20}
    assert result["student_rows"][4] == result["teacher_rows"][4]  # same weights, same seeds, same clips
    assert result["student_rows"][2] != result["student_rows"][8]
    assert set(result["gate"]["checks"]) == set(fewstep_gate.judge(*rows(), REAL)["checks"])
    assert json.loads(json.dumps(result))["gate"] == result["gate"]
    assert fewstep_gate.format_gate(result).startswith("Few-step gate, 3 held-out seeds: ")
