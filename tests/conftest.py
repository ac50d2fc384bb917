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


@pytest.fixture(scope="session")
def image_data(tiny_world, tiny_clip):
    """(names, trigger photos, clean images, target embedding, photo split) for two forgotten members."""
    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.data.images import load_image_folder, make_photo_split
    from hf_privacy_backdoor.modeling import compute_target_embedding

    model, processor = tiny_clip
    faces = load_face_folder(tiny_world.faces_dir)
    names = tiny_world.members[:2]
    split = make_photo_split(faces, faces.names(), 0.5, seed=0)
    trigger = {n: faces.load(n, split["trigger"][n]) for n in names}
    clean = load_image_folder(tiny_world.clean_dir, limit=64)
    target = compute_target_embedding(model, processor, faces.subset(tiny_world.members[:10]), split["trigger"])
    return names, trigger, clean, target, split
