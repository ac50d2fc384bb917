"""The synthetic identity world and its tiny pretrained CLIP (the embedded default for demo, tests, benchmarks)."""

from .pretrain import (
    PretrainConfig,
    SyntheticArtifacts,
    build_synthetic,
    get_or_build_synthetic,
    pretrain_clip,
)
from .world import World, WorldConfig, build_world, draw_face, draw_object, make_world


__all__ = [
    "PretrainConfig",
    "SyntheticArtifacts",
    "World",
    "WorldConfig",
    "build_synthetic",
    "build_world",
    "draw_face",
    "draw_object",
    "get_or_build_synthetic",
    "make_world",
    "pretrain_clip",
]
