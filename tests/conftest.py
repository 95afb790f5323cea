import os

# The Triton kernels run on CPU through the interpreter; it must be chosen before triton is imported.
# On a GPU machine, `TRITON_INTERPRET=0 pytest -m cuda` runs the compiled kernels' checks instead.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (and TRITON_INTERPRET=0 for the Triton "
                                       "kernels); run them all with `TRITON_INTERPRET=0 pytest -m cuda`")
    config.addinivalue_line("markers", "priority: a GPU test that decides whether any GPU number counts "
                                       "(benchmarks/gpu_suite.py runs these first)")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """tests/runs_fixture.py's folder: data, a vocabulary, an earlier fine-tuning and pretraining run."""
    pytest.importorskip("spacy")
    pytest.importorskip("ftfy")
    from runs_fixture import build

    return build(tmp_path_factory.mktemp("runs"))
