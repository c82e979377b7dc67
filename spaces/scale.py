"""The rule that sizes a search's starting points to its data and budget, not to a dataset's name.

A search's first trials are known-good configurations (``SearchSpace.initial_params``). What
one costs grows with the training images and their pixels, so the same start that is seconds
on 4,500 images is minutes on 45,000. The rule, from measurements at 32 px on 2 cores of the
Tiny ImageNet sample (4,500 training images, 10 classes) and the 100-class set (45,000
training images, 100 classes), docs/scale.md:

- **large data** is more than LARGE_IMAGES training images, counted as 32x32 ones;
- a pretrained backbone's first trial computes the features of every training image once:
  at the largest resolution whose features take at most FEATURE_SHARE of the budget (at
  FEATURE_SECONDS_160 per image at 160 px, growing with the pixels), and, on large data,
  without the flipped images' features (they would double that time; 45,000 images need
  the augmentation less);
- on large data a sampled trial explores on a fraction of the images (search/trials/fidelity.py)
  while the starting points train on all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


# More training images than this, counted as 32x32 ones, is large data; it is also
# EXPLORE_IMAGES's default (search/settings.py): a sampled trial explores on this many.
LARGE_IMAGES = 9_000
# The key under which a starting point says the share of the training images it trains on: the
# trial's user attr it becomes (records.FRACTION_ATTR, the same name; spaces import no search module).
FRACTION_ATTR = "data_fraction"

# Seconds a MobileNet 0.25 takes per image at 160 px for its features on 2 cores (resizing
# included), measured on the 100-class set: 3.5 ms (50,000 images) to 3.9 ms (95,000, flipped
# copies included), docs/scale.md; the rule rounds up. Other resolutions: by their pixels.
FEATURE_SECONDS_160 = 0.004
# The share of the budget the first trial's features may take.
FEATURE_SHARE = 0.25


@dataclass(frozen=True)
class DataScale:
    """What the starting points scale with: the training images, classes and image shape, and
    the search's budget in seconds (None: none, the search ends on its TRIALS). A starting point
    may say the share of the images it trains on (under ``FRACTION_ATTR``, the trial's user attr it becomes:
    ``exploring``, say); without it,
    it trains on all of them."""

    train_images: int
    classes: int
    image_shape: tuple[int, int, int]
    budget: float | None = None
    exploring: float = 1.0  # the share of the images a sampled trial trains on (search/trials/fidelity.py)

    @property
    def pixels(self) -> float:
        """The training images, counted as 32x32 ones."""
        return self.train_images * self.image_shape[0] * self.image_shape[1] / (32 * 32)

    @property
    def large(self) -> bool:
        return self.pixels > LARGE_IMAGES

    def feature_resolution(self, choices: tuple[int, ...], preferred: int) -> int:
        """The resolution of a backbone's first trial: ``preferred`` without a budget, else the
        largest of ``choices`` up to it whose features fit FEATURE_SHARE of the budget (the
        smallest when none does)."""
        if self.budget is None:
            return preferred
        images = self.train_images * (1 if self.large else 2) + self.train_images // 9  # (+ flipped) + validation
        fitting = [r for r in sorted(choices) if r <= preferred
                   and images * FEATURE_SECONDS_160 * (r / 160) ** 2 <= FEATURE_SHARE * self.budget]
        return fitting[-1] if fitting else min(choices)
