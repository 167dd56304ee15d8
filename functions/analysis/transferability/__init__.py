"""Transferability: scores (LogME, H-score, LEEP, NCE, SFDA, N-LEEP and the k-NN baseline),
scores per cut point, their validation against measured sweeps, and records with a recommender
over them.

The names below are the package's public interface, so ``from functions.analysis import
transferability as tr; tr.logme(...)`` reads as before the split into modules.
"""
from .knn import knn_accuracy
from .per_cut import CutScores
from .recommender import build_records, forward_flops, recommender_eval, save_records
from .scores import hscore, leep, logme, nce
from .sfda_nleep import nleep, sfda
from .validation import mean_accuracy, plot_score_vs_accuracy, rank_agreement, score_columns, validate_against_sweeps

__all__ = ["CutScores", "build_records", "forward_flops", "hscore", "knn_accuracy", "leep", "logme", "mean_accuracy",
           "nce", "nleep", "plot_score_vs_accuracy", "rank_agreement", "recommender_eval", "save_records", "score_columns",
           "sfda", "validate_against_sweeps"]
