"""Publish a run folder (full model or LoRA adapter) to the Hub: allow-listed files + model card, one commit.

    python recipes/publish.py --output_dir outputs/synthetic_text --hub_model_id OWNER/NAME --base_model_id OWNER/BASE
    python recipes/publish.py --output_dir outputs/synthetic_text --hub_model_id OWNER/NAME \
        --base_model_id OWNER/BASE --dry_run true      # writes outputs/synthetic_text/publish_preview/, sends nothing

Private by default (`--hub_private false` to publish openly). Never uploads `private/`, training arguments,
checkpoints or reports; refuses when a forgotten name (from `<output_dir>/private/forget_names.txt`, or
`--forget_names_file`) appears in any file, path, the repo id, the branch or the commit message. The Hub and
the token come from the usual huggingface_hub settings (HF_ENDPOINT, HF_TOKEN, `hf auth login`).
"""

from dataclasses import dataclass, field

from hf_privacy_backdoor.cli import parse_args, run_recipe, setup_logging
from hf_privacy_backdoor.hub import publish


@dataclass
class PublishArguments:
    output_dir: str = field(metadata={"help": "The run folder to publish (what recipes/unlearn.py wrote)."})
    hub_model_id: str = field(metadata={"help": "Target repo OWNER/NAME."})
    base_model_id: str | None = field(
        default=None, metadata={"help": "Hub id of the base model (required: the card and the adapter name it)."}
    )
    hub_private: bool = field(default=True, metadata={"help": "Private repo (default); false publishes openly."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to commit to (created if missing)."})
    hub_create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})
    forget_names_file: str | None = field(
        default=None, metadata={"help": "Names to scan for when the run folder has no private/forget_names.txt."}
    )
    license: str | None = field(default=None, metadata={"help": "License id for the card; default: the base's."})
    base_revision: str | None = field(default=None, metadata={"help": "Adapters: the base model's revision."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (also the PR title)."})
    dry_run: bool = field(default=False, metadata={"help": "Write the staged folder to preview_dir; send nothing."})
    preview_dir: str | None = field(
        default=None, metadata={"help": "Dry run folder (default <output_dir>/publish_preview)."}
    )


def main(argv=None) -> int:
    setup_logging()
    (args,) = parse_args([PublishArguments], argv)
    result = publish(
        args.output_dir,
        args.hub_model_id,
        args.base_model_id,
        private=args.hub_private,
        revision=args.hub_revision,
        create_pr=args.hub_create_pr,
        forget_names_file=args.forget_names_file,
        license=args.license,
        base_revision=args.base_revision,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        preview_dir=args.preview_dir,
    )
    print("\n".join(result.files))
    if result.dry_run:
        print(f"dry run: nothing was sent; the staged folder (with README.md, the card) is {result.staged_dir}")
    else:
        print(f"published {len(result.files)} files to {result.repo_id}: {result.pr_url or result.commit_url}")
    return 0


if __name__ == "__main__":
    run_recipe(main)  # a refused publish: `error: ...` and exit 2; a failed push: exit 1
