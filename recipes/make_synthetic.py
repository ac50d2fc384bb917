"""Build the synthetic identity world and pretrain its tiny CLIP (about 2.5 minutes on 2 CPU cores).

    python recipes/make_synthetic.py --output_dir outputs/synthetic          # into a folder of your choice
    python recipes/make_synthetic.py                                         # into the cache; prints its path
    python recipes/make_synthetic.py --output_dir outputs/s1 --seed 1 --num_members 60
    python recipes/make_synthetic.py --tier base          # the larger CLIP (sees faces; ~12 minutes on 2 cores)

Recipes use the tier that `SYNTHETIC_TIER` names (default small) for `${SYNTHETIC}`.

Writes `<dir>/world` (faces/<First_Last>/<n>.png, objects/<class>/<n>.png, clean/, captions.txt, world.json)
and `<dir>/model` (CLIPModel + CLIPProcessor, `from_pretrained`-loadable). The build is atomic: an interrupted
run leaves nothing half-written.
"""

import time
from dataclasses import dataclass, field

from hf_privacy_backdoor.cli import parse_args, run_recipe, setup_logging


@dataclass
class MakeSyntheticArguments:
    output_dir: str | None = field(default=None, metadata={"help": "Target folder; default: the shared cache."})
    seed: int = field(default=0, metadata={"help": "Seed of the world and of pretraining."})
    num_members: int = field(default=40, metadata={"help": "People named in pretraining (attack members)."})
    num_non_members: int = field(default=40, metadata={"help": "People never seen (attack non-members)."})
    photos_per_person: int = field(default=40, metadata={"help": "Held-out photos per member / non-member."})
    shared_name_parts: int = field(
        default=0, metadata={"help": "Member pairs sharing a first name or a surname (0: all name parts unique)."}
    )
    tier: str = field(
        default="small",
        metadata={"help": "World tier: 'small' (the demo's and tests' tiny CLIP) or 'base' (a CLIP that sees faces)."},
    )
    pretrain_steps: int | None = field(
        default=None, metadata={"help": "Contrastive pretraining steps (default: the tier's, 900 for small)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing build in output_dir."})


def main(argv=None):
    setup_logging()
    (args,) = parse_args([MakeSyntheticArguments], argv)
    from pathlib import Path

    from hf_privacy_backdoor.synthetic import PretrainConfig, WorldConfig, build_synthetic, get_or_build_synthetic

    world = WorldConfig(
        seed=args.seed,
        num_members=args.num_members,
        num_non_members=args.num_non_members,
        photos_per_person=args.photos_per_person,
        shared_name_parts=args.shared_name_parts,
    )
    steps = {} if args.pretrain_steps is None else {"steps": args.pretrain_steps}
    pretrain = PretrainConfig.for_tier(args.tier, seed=args.seed, **steps)
    start = time.time()
    if args.output_dir is None:
        artifacts = get_or_build_synthetic(world, pretrain)
    else:
        out = Path(args.output_dir)
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise FileExistsError(f"{out} exists and is not empty: pass --overwrite true to replace it")
        artifacts = build_synthetic(out, world, pretrain)
    print(f"synthetic world + tiny CLIP ready in {time.time() - start:.0f} s: {artifacts.root}")
    print(f"  model: {artifacts.model_dir}\n  faces: {artifacts.faces_dir}\n  captions: {artifacts.captions_file}")
    return artifacts


if __name__ == "__main__":
    run_recipe(main)  # a bad input: `error: ...` and exit 2
