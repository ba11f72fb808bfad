"""ecg-tune: hyperparameter and ablation sweeps for self-supervised learning on 12-lead ECGs."""

__version__ = "0.1.0"
