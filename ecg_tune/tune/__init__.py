"""The sweep layer: the only one that touches Ray, Optuna and MLflow."""

import os

# Token auth (platform notes §3.7): when RAY_AUTH_MODE is unset but a token is given, the user means
# token auth. Ray reads RAY_AUTH_MODE into its config when it is imported, and no public API refreshes
# that config, so it is set here, before any module of this layer imports Ray. RAY_AUTH_MODE itself is
# Ray's and is never overridden.
if "RAY_AUTH_MODE" not in os.environ and ("RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ):
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["ECG_TUNE_SET_RAY_AUTH_MODE"] = "1"  # so init_ray can say so
