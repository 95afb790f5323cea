"""gpt1_fast: a fast, faithful GPT-1 (Radford et al. 2018) in PyTorch.

    from gpt1_fast import TransformerModel, DoubleHeadModel, load_openai_pretrained_model, DEFAULT_CONFIG
    from gpt1_fast import Classifier   # scikit-learn estimators (need scikit-learn: pip install gpt1_fast[tasks])
"""
from .config import DEFAULT_CONFIG, GPTConfig
from .model import (ClfHead, DoubleHeadModel, LMHead, LMModel, MultipleChoiceHead, ScoreHead, SimilarityHead,
                    TransformerModel, set_backend)
from .opt import OpenAIAdam
from .weights import CheckpointError, export_hf, load_openai_pretrained_model

__all__ = ["DEFAULT_CONFIG", "GPTConfig", "TransformerModel", "DoubleHeadModel", "LMModel", "LMHead",
           "MultipleChoiceHead", "ClfHead", "ScoreHead", "SimilarityHead", "set_backend", "OpenAIAdam",
           "load_openai_pretrained_model", "export_hf", "CheckpointError", "TextEncoder",
           "Classifier", "Entailment", "Similarity", "MultipleChoice", "Regressor"]
__version__ = "0.1.0"

_LAZY = {"TextEncoder": "text",  # spaCy / ftfy, optional
         **{name: "api" for name in ("Classifier", "Entailment", "Similarity", "MultipleChoice", "Regressor")}}


def __getattr__(name):  # imported when first used: their dependencies (scikit-learn, spaCy, ftfy) are optional
    if name in _LAZY:
        import importlib

        from .deps import require

        if _LAZY[name] == "api":
            require("metrics", f"{name} (a scikit-learn estimator)")  # MissingPackage naming the extra

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gpt1_fast' has no attribute {name!r}")
