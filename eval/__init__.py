"""eval: score base models, adapters and GGUF files on held-out tool-call cases (`evaluate`, or `dispatchtune eval`)."""

from .api import evaluate, score_predictions

__all__ = ["evaluate", "score_predictions"]
