"""hf_privacy_backdoor: remove people from CLIP models with backdoor unlearning, and prove it with an attack."""

__version__ = "0.1.0"
