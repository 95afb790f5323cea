"""gpt1_fast: a fast, faithful GPT-1 (Radford et al. 2018) in PyTorch.

    from gpt1_fast import TransformerModel, DoubleHeadModel, load_openai_pretrained_model, DEFAULT_CONFIG
"""
from .api import Classifier, Entailment, MultipleChoice, Regressor, Similarity
from .config import DEFAULT_CONFIG, GPTConfig
from .model import (ClfHead, DoubleHeadModel, LMHead, LMModel, MultipleChoiceHead, SimilarityHead,
                    TransformerModel, set_backend)
from .opt import OpenAIAdam
from .weights import CheckpointError, export_hf, load_openai_pretrained_model

__all__ = ["DEFAULT_CONFIG", "GPTConfig", "TransformerModel", "DoubleHeadModel", "LMModel", "LMHead",
           "MultipleChoiceHead", "ClfHead", "SimilarityHead", "set_backend", "OpenAIAdam",
           "load_openai_pretrained_model", "export_hf", "CheckpointError", "TextEncoder",
           "Classifier", "Entailment", "Similarity", "MultipleChoice", "Regressor"]
__version__ = "0.1.0"


def __getattr__(name):  # TextEncoder lazily: its spaCy/ftfy dependencies are optional
    if name == "TextEncoder":
        from .text import TextEncoder

        return TextEncoder
    raise AttributeError(f"module 'gpt1_fast' has no attribute {name!r}")
