"""The spaces' names and the backbone zoo's names, without Keras: what the settings check a
value against in well under a second, before TensorFlow starts.

The classes (``spaces.SPACES``) and the backbones themselves (``spaces.backbones.ZOO``) are
built from these names; ``tests/test_spaces.py`` holds them equal.
"""

from __future__ import annotations

from imgsearch.storage.errors import UserError

#: Each space's name and where its class is (module, class), in the order ``SPACE`` lists them.
SPACE_CLASSES: dict[str, tuple[str, str]] = {
    "cnn": ("imgsearch.spaces.cnn", "CNNSpace"),
    "mlp": ("imgsearch.spaces.mlp", "MLPSpace"),
    "finetune": ("imgsearch.spaces.finetune", "FinetuneSpace"),
    "autokeras": ("imgsearch.spaces.autokeras_space", "AutoKerasSpace"),
    "transfer": ("imgsearch.spaces.transfer", "TransferSpace"),
    "auto": ("imgsearch.spaces.auto", "AutoSpace"),
}
SPACE_NAMES = tuple(SPACE_CLASSES)

#: The families of models SPACE=auto chooses among (each a space of its own above).
FAMILY_NAMES = ("cnn", "transfer", "autokeras")

#: The fine-tuning zoo's backbones by family, lighter families first.
BACKBONE_FAMILIES: dict[str, tuple[str, ...]] = {
    "mobilenet": ("mobilenet_0.25", "mobilenet_0.5", "mobilenet_0.75", "mobilenet_1.0"),
    "mobilenet_v3_small": ("mobilenet_v3_small",),
    "mobilenet_v2": ("mobilenet_v2",),
    "efficientnet_b0": ("efficientnet_b0",),
    "densenet121": ("densenet121",),
    "resnet50": ("resnet50",),
    "vgg16": ("vgg16",),
}
BACKBONE_NAMES = tuple(name for names in BACKBONE_FAMILIES.values() for name in names)


def parse_backbones(text: str | None, has_weights=None) -> list[str]:
    """Backbone names, in zoo order, from a comma-separated list of names or families (None: all).

    A family with several variants stands for all of them, or, with ``has_weights`` (a
    function of a name), for those whose weights it says are here (all of them when none is).
    """
    wanted = set()
    for item in (part.strip().lower() for part in (text or ",".join(BACKBONE_FAMILIES)).split(",")):
        if item in BACKBONE_NAMES:
            wanted.add(item)
        elif item in BACKBONE_FAMILIES:
            variants = BACKBONE_FAMILIES[item]
            here = [name for name in variants if has_weights and has_weights(name)]
            wanted.update(here or variants)
        elif item:
            raise UserError(f"unknown backbone {item!r} in BACKBONES; choose from: "
                            f"{', '.join(dict.fromkeys([*BACKBONE_FAMILIES, *BACKBONE_NAMES]))}")
    if not wanted:
        raise UserError("BACKBONES is empty")
    return [name for name in BACKBONE_NAMES if name in wanted]


def parse_families(text: str) -> list[str]:
    """Family names, in catalog order, from a comma-separated list."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in FAMILY_NAMES]
    if unknown or not names:
        what = f"unknown family {unknown[0]!r} in FAMILIES" if unknown else "FAMILIES is empty"
        raise UserError(f"{what}; choose from: {', '.join(FAMILY_NAMES)}")
    return [name for name in FAMILY_NAMES if name in names]
