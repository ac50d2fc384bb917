"""Experimental terms of the backdoor method that no recipe turns on: they may change or go without notice.

* `relearn_guard`: the image backdoor trained at a fine-tuned copy of the student (against relearning);
* `ExperimentalBackdoorConfig` / `ExperimentalBackdoorTrainer` (`backdoor.py`): the backdoor method plus the
  relearning guard and the name-affinity term (a trigger photo no closer to its own name than the target is).

Neither held on held-out fine-tunes in our measurements (README "Robustness"); they live here, fenced from the
core config and trainer, as `trl.experimental` does.
"""

import warnings


warnings.warn(
    "hf_privacy_backdoor.experimental is experimental: its terms may change or be removed without notice.",
    FutureWarning,
    stacklevel=2,
)
