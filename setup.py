"""gpt1_fast: install with `pip install --no-build-isolation -e .[test]` (see Makefile).

--no-build-isolation matters: an isolated build env would pull a multi-GB CUDA torch.
"""
from setuptools import find_packages, setup

setup(
    name="gpt1_fast",
    version="0.1.0",
    description="Fast, faithful GPT-1 (OpenAI 2018) in PyTorch: fused Triton/C++ kernels, OpenAI weights, ROCStories",
    packages=find_packages(include=["gpt1_fast", "gpt1_fast.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={
        # Text pipeline (TextEncoder): ftfy + spaCy's rule-based English tokenizer.
        "text": ["ftfy", "spacy>=3.5"],
        "triton": ["triton>=3.1"],
        "test": [
            "pytest",
            "pytest-timeout",
            "transformers==4.57.6",
            "triton>=3.1",
            "ftfy",
            "spacy>=3.5",
            "ninja",
        ],
    },
    package_data={"gpt1_fast": ["py.typed"]},
)
