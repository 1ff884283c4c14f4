"""Matching and metrics against hand-computed cases (SMLM challenge conventions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from algorithms.evaluation import efficiency, evaluate, match
from algorithms.io.table import LocTable


def table(frame, x, y, z=None, **extra) -> LocTable:
    cols = {"frame": frame, "x": x, "y": y, **extra}
    if z is not None:
        cols["z"] = z
    return LocTable.from_arrays(**{k: np.asarray(v, dtype=float) if k != "frame" else v for k, v in cols.items()})


def random_truth(n: int, seed: int = 0, frames: int = 50, three_d: bool = True) -> LocTable:
    rng = np.random.default_rng(seed)
    return table(
        rng.integers(0, frames, n), rng.uniform(0, 6400, n), rng.uniform(0, 6400, n),
        rng.uniform(-500, 500, n) if three_d else None, photons=rng.uniform(1000, 5000, n),
    )


@pytest.mark.parametrize("method", ["greedy", "hungarian"])
def test_perfect_prediction_gives_jaccard_one_and_zero_rmse(method):
    truth = random_truth(500)
    out = evaluate(truth, truth, method=method)
    assert (out["tp"], out["fp"], out["fn"]) == (500, 0, 0)
    assert out["jaccard"] == 1.0
    assert out["rmse_lat"] == 0.0 and out["rmse_ax"] == 0.0 and out["rmse_vol"] == 0.0
    assert out["efficiency_lat"] == 1.0 and out["efficiency_vol"] == 1.0
    assert out["photon_rmse"] == 0.0


def test_lateral_jitter_sigma_gives_rmse_sigma_sqrt2():
    sigma = 20.0
    truth = random_truth(20000, seed=1, frames=200, three_d=False)
    rng = np.random.default_rng(2)
    pred = truth.with_columns(x=truth["x"] + rng.normal(0, sigma, len(truth)),
                              y=truth["y"] + rng.normal(0, sigma, len(truth)))
    out = evaluate(truth, pred)
    assert out["jaccard"] > 0.995  # a few neighbours can swap at 20000 emitters, none lost
    # Relative s.e. of an RMS over 20000 pairs ~ 0.5 %: 3 % is a loose bound.
    assert out["rmse_lat"] == pytest.approx(sigma * math.sqrt(2), rel=0.03)


def test_efficiency_matches_formula_on_worked_example():
    # JI 0.8, RMSE 30 nm: E = 1 - sqrt(0.2² + (0.01·30)²) = 1 - sqrt(0.13)
    assert efficiency(0.8, 30.0, 0.01) == pytest.approx(1 - math.sqrt(0.13), abs=1e-12)
    # 4 truths, 4 preds: 3 matched at 30 nm lateral offset along x, one FP and one FN far away.
    truth = table([0, 0, 0, 0], [0, 1000, 2000, 3000], [0, 0, 0, 0])
    pred = table([0, 0, 0, 0], [30, 1030, 2030, 9000], [0, 0, 0, 0])
    out = evaluate(truth, pred)
    assert (out["tp"], out["fp"], out["fn"]) == (3, 1, 1)
    assert out["jaccard"] == pytest.approx(0.6)
    assert out["rmse_lat"] == pytest.approx(30.0)
    assert out["efficiency_lat"] == pytest.approx(1 - math.sqrt(0.4**2 + 0.3**2))  # = 0.5


def test_hungarian_maximises_pairs_where_greedy_does_not():
    # P1 is closest to T1, so greedy takes (T1, P1) and strands T2 and P2; Hungarian pairs (T1,P2),(T2,P1).
    truth = table([0, 0], [0, 240], [0, 0])
    pred = table([0, 0], [110, -130], [0, 0])
    g = match(truth, pred, "greedy")
    h = match(truth, pred, "hungarian")
    assert g.tp == 1 and list(g.truth) == [0] and list(g.pred) == [0]
    assert h.tp == 2 and list(h.truth) == [0, 1] and list(h.pred) == [1, 0]


def test_thresholds_and_frames_are_respected():
    truth = table([0, 0, 1, 2], [0, 1000, 0, 0], [0, 0, 0, 0], z=[0, 0, 0, 0])
    pred = table(
        [0, 0, 1, 1, 3], [249, 1000, 0, 5000, 0], [0, 0, 0, 0, 0], z=[0, 501, 499, 0, 0],
    )
    m = match(truth, pred)
    # (T0,P0) lateral 249 < 250 ok; (T1,P1) axial 501 too far; (T2,P2) axial 499 ok; frame 2 vs 3 never.
    assert sorted(zip(m.truth.tolist(), m.pred.tolist(), strict=True)) == [(0, 0), (2, 2)]
    beyond = table([0], [251], [0], z=[0])
    assert match(table([0], [0], [0], z=[0]), beyond).tp == 0


def test_empty_tables():
    truth = random_truth(10)
    empty = truth.select(np.zeros(len(truth), bool))
    out = evaluate(truth, empty)
    assert (out["tp"], out["fp"], out["fn"], out["jaccard"]) == (0, 0, 10, 0.0)
    assert math.isnan(out["rmse_lat"])
    assert evaluate(empty, empty)["jaccard"] == 1.0


def test_color_accuracy_and_rejection_rate():
    truth = table([0] * 5, [0, 1000, 2000, 3000, 4000], [0] * 5, code=[0, 0, 1, 1, 1])
    pred = table([0] * 5, [0, 1000, 2000, 3000, 4000], [0] * 5, code=[0, 1, 1, -1, 1])
    out = evaluate(truth, pred)
    assert out["color_accuracy"] == pytest.approx(3 / 5)
    assert out["rejection_rate"] == pytest.approx(1 / 5)
    assert out["color_accuracy_assigned"] == pytest.approx(3 / 4)
    # The simulator's truth names the colour `dye`: scored the same
    as_dye = table([0] * 5, [0, 1000, 2000, 3000, 4000], [0] * 5, dye=[0, 0, 1, 1, 1])
    assert evaluate(as_dye, pred)["color_accuracy"] == pytest.approx(3 / 5)


def test_rmse_relative_to_crlb():
    truth = random_truth(5000, seed=3, three_d=False)
    n = len(truth)
    truth = truth.with_columns(crlb_x=np.full(n, 10.0), crlb_y=np.full(n, 10.0))
    rng = np.random.default_rng(4)
    pred = truth.with_columns(x=truth["x"] + rng.normal(0, 10, n), y=truth["y"] + rng.normal(0, 10, n))
    assert evaluate(truth, pred)["rmse_lat_over_crlb"] == pytest.approx(1.0, rel=0.05)


def plain_greedy(truth: LocTable, pred: LocTable, lateral_nm=250.0, axial_nm=500.0) -> int:
    """A plain Python reference: every pair of the same frame, nearest first."""
    pairs = []
    for i in range(len(truth)):
        for j in range(len(pred)):
            if truth["frame"][i] != pred["frame"][j]:
                continue
            d2 = (truth["x"][i] - pred["x"][j]) ** 2 + (truth["y"][i] - pred["y"][j]) ** 2
            dz = truth["z"][i] - pred["z"][j]
            if d2 < lateral_nm**2 and abs(dz) < axial_nm:
                pairs.append((math.sqrt(d2 + dz * dz), i, j))
    used_t, used_p, tp = set(), set(), 0
    for _, i, j in sorted(pairs):
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
            tp += 1
    return tp


def test_vectorised_greedy_agrees_with_plain_python_and_hungarian_is_never_worse():
    truth = random_truth(400, seed=5, frames=4)
    rng = np.random.default_rng(6)
    n = len(truth)
    keep = rng.random(n) < 0.8
    pred = truth.select(keep)
    pred = pred.with_columns(x=pred["x"] + rng.normal(0, 80, len(pred)), y=pred["y"] + rng.normal(0, 80, len(pred)))
    g = match(truth, pred, "greedy")
    assert g.tp == plain_greedy(truth, pred)
    assert match(truth, pred, "hungarian").tp >= g.tp


def test_compare_cli_writes_metrics_and_refuses_missing_tables(tmp_path, capsys):
    import json

    from algorithms.cli import run_main
    from algorithms.evaluation.cli import compare
    from algorithms.io.formats import write_table

    truth = random_truth(50, seed=9)
    write_table(truth, tmp_path / "t.csv")
    write_table(truth, tmp_path / "p.h5")
    assert run_main(compare, ["--truth", str(tmp_path / "t.csv"), "--pred", str(tmp_path / "p.h5"),
                              "--outputs", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["jaccard"] == 1.0 and metrics["rmse_lat"] == pytest.approx(0.0, abs=1e-3)
    capsys.readouterr()
    assert run_main(compare, ["--truth", str(tmp_path / "missing.csv"), "--pred", str(tmp_path / "p.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.csv: no such file" in err and len(err.strip().splitlines()) == 1
