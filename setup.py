"""gpt1_fast: install with `pip install --no-build-isolation -e .[test]` (see Makefile).

--no-build-isolation matters: an isolated build env would pull a multi-GB CUDA torch, and without
torch in the build env the extension cannot be built at install time (it is then built on first use).
"""
import os
import sys

from setuptools import find_packages, setup

CSRC = "gpt1_fast/csrc"  # inside the package: a non-editable install ships the sources for the just-in-time build


def _say(msg):
    # pip shows a build's output only with -v; gpt1_fast/_ext.py says again at run time what it builds or lacks.
    print(f"gpt1_fast: {msg}", file=sys.stderr, flush=True)


# --- gpt1_fast._C (fused OpenAI-Adam, the CPU decoding step; gpt1_fast/csrc/): optional. CPU always; CUDA
# when nvcc and a CUDA torch are present. If torch is not importable here, or the build fails, the package
# still installs and gpt1_fast/_ext.py builds the extension just in time on first use (or falls back to
# the unfused step and the Python decoding blocks).
def _extension_build():
    later = "it is built just in time on first use instead (needs a C++ compiler; ninja comes with gpt1_fast)"
    if os.environ.get("GPT1_FAST_NO_EXT"):
        _say(f"GPT1_FAST_NO_EXT is set: not building gpt1_fast._C now; {later}")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as e:
        _say(f"torch is not importable in the build environment ({type(e).__name__}: {e}), so gpt1_fast._C is "
             f"not built now; {later}. To build it at install: install torch first, then "
             "`pip install --no-build-isolation .`")
        return [], {}
    # errno-free sqrtf lets GCC vectorise the update loop; -fopenmp makes at::parallel_for parallel
    # (torch's header implements it with `omp parallel`; libgomp.so.1 is the one torch already loaded).
    cxx = ["-O3", "-fno-math-errno", "-fopenmp"]
    sources = [f"{CSRC}/openai_adam.cpp", f"{CSRC}/cpu_decode.cpp"]
    ext_cls = cpp_extension.CppExtension
    extra = {"cxx": cxx}
    if torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None:
        sources += [f"{CSRC}/openai_adam_cuda.cpp", f"{CSRC}/openai_adam_cuda.cu"]
        ext_cls = cpp_extension.CUDAExtension
        extra["nvcc"] = ["-O3", "-lineinfo"]
    ext = ext_cls("gpt1_fast._C", sources, extra_compile_args=extra, extra_link_args=["-fopenmp"])

    class OptionalBuildExt(cpp_extension.BuildExtension):
        def run(self):
            try:
                super().run()
            except Exception as e:  # never fail the install over the optional extension
                _say(f"WARNING: building gpt1_fast._C failed ({type(e).__name__}: {e}); {later}")

    return [ext], {"build_ext": OptionalBuildExt}


ext_modules, cmdclass = _extension_build()

# Optional packages, by what they bring (gpt1_fast/deps.py checks them before a run writes anything and
# names the extra that is missing). `.[all]`: everything fine-tuning, pretraining and plotting use.
EXTRAS = {
    "text": ["ftfy", "spacy>=3.5"],            # encoding text (TextEncoder): every command that reads text
    "tasks": ["scikit-learn", "scipy"],        # the tasks' metrics (fine-tuning, predict, zeroshot), the estimators
    "plot": ["matplotlib"],                    # python -m gpt1_fast.plot, pretraining's loss.png, zeroshot --plot
    "triton": ["triton>=3.1"],                 # the fused kernels (CUDA; on a CPU through TRITON_INTERPRET=1)
}
EXTRAS["all"] = EXTRAS["text"] + EXTRAS["tasks"] + EXTRAS["plot"]
EXTRAS["test"] = EXTRAS["all"] + EXTRAS["triton"] + ["pytest", "pytest-timeout", "transformers==4.57.6", "pandas"]

setup(
    name="gpt1_fast",
    version="0.1.0",
    description="Fast, faithful GPT-1 (OpenAI 2018) in PyTorch: fused Triton/C++ kernels, OpenAI weights, ROCStories",
    packages=find_packages(include=["gpt1_fast", "gpt1_fast.*"]),
    python_requires=">=3.10",
    # ninja: the just-in-time extension build
    install_requires=["torch>=2.4", "numpy", "tqdm", "safetensors>=0.4", "ninja"],
    extras_require=EXTRAS,
    package_data={"gpt1_fast": ["py.typed", "csrc/*.cpp", "csrc/*.h", "csrc/*.cu"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
