"""Test set-up: offline, one thread, a temporary HF_HOME, all set before any Hugging Face import.

The synthetic world and its pretrained tiny CLIP are built once (cached outside the repo, keyed by the
generator's parameters) and shared through the session-scoped `tiny_world` fixture.
"""

import os
import tempfile


os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_home_")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_world():
    """The synthetic world + pretrained tiny CLIP (built once per cache, ~2 minutes on 2 cores)."""
    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    return get_or_build_synthetic(progress=False)


@pytest.fixture(scope="session")
def tiny_clip(tiny_world):
    """(model, processor) of the pretrained tiny CLIP, in eval mode. Do not modify: load your own copy."""
    from hf_privacy_backdoor.modeling import load_clip

    return load_clip(str(tiny_world.model_dir))
