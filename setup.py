"""gpt1_fast: install with `pip install --no-build-isolation -e .[test]` (see Makefile).

--no-build-isolation matters: an isolated build env would pull a multi-GB CUDA torch.
"""
import os
import sys

from setuptools import find_packages, setup


# --- gpt1_fast._C (fused OpenAI-Adam, csrc/): optional. CPU always; CUDA when nvcc and a CUDA torch are
# present. If torch is not importable here, or the build fails, the package still installs and
# gpt1_fast/_ext.py builds the extension just in time on first use (or falls back to the unfused step).
def _extension_build():
    if os.environ.get("GPT1_FAST_NO_EXT"):
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception:
        return [], {}
    # errno-free sqrtf lets GCC vectorise the update loop; -fopenmp makes at::parallel_for parallel
    # (torch's header implements it with `omp parallel`; libgomp.so.1 is the one torch already loaded).
    cxx = ["-O3", "-fno-math-errno", "-fopenmp"]
    sources = ["csrc/openai_adam.cpp"]
    ext_cls = cpp_extension.CppExtension
    extra = {"cxx": cxx}
    if torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None:
        sources += ["csrc/openai_adam_cuda.cpp", "csrc/openai_adam_cuda.cu"]
        ext_cls = cpp_extension.CUDAExtension
        extra["nvcc"] = ["-O3", "-lineinfo"]
    ext = ext_cls("gpt1_fast._C", sources, extra_compile_args=extra, extra_link_args=["-fopenmp"])

    class OptionalBuildExt(cpp_extension.BuildExtension):
        def run(self):
            try:
                super().run()
            except Exception as e:  # never fail the install over the optional extension
                print(f"WARNING: building gpt1_fast._C failed ({type(e).__name__}: {e}); it will be built "
                      "just in time on first use if possible", file=sys.stderr)

    return [ext], {"build_ext": OptionalBuildExt}


ext_modules, cmdclass = _extension_build()

setup(
    name="gpt1_fast",
    version="0.1.0",
    description="Fast, faithful GPT-1 (OpenAI 2018) in PyTorch: fused Triton/C++ kernels, OpenAI weights, ROCStories",
    packages=find_packages(include=["gpt1_fast", "gpt1_fast.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm", "safetensors>=0.4"],
    extras_require={
        # Text pipeline (TextEncoder): ftfy + spaCy's rule-based English tokenizer.
        "text": ["ftfy", "spacy>=3.5"],
        "triton": ["triton>=3.1"],
        # Loss curves (gpt1_fast.plot, the PNG gpt1_fast.pretrain draws at the end).
        "plot": ["matplotlib"],
        # The paper's fine-tuning tasks: their metrics (gpt1_fast.tasks.metrics).
        "tasks": ["scikit-learn", "scipy"],
        "test": [
            "pytest",
            "pytest-timeout",
            "transformers==4.57.6",
            "triton>=3.1",
            "ftfy",
            "spacy>=3.5",
            "ninja",
            "matplotlib",
            "scikit-learn",
            "scipy",
            "pandas",
        ],
    },
    package_data={"gpt1_fast": ["py.typed"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
