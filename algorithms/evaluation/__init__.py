"""Evaluation of localizations against ground truth: SMLM-challenge matching and metrics (design §6)."""

from algorithms.evaluation.matching import AXIAL_NM, LATERAL_NM, Matches, candidate_pairs, match
from algorithms.evaluation.metrics import efficiency, evaluate, metrics_from_matches

__all__ = [
    "AXIAL_NM", "LATERAL_NM", "Matches", "candidate_pairs", "efficiency", "evaluate", "match",
    "metrics_from_matches",
]
