"""``ProtectConfig``: every knob of the engine, once. Each field carries its own metadata (help text, CLI unit,
allowed values or range), from which the CLI flags, validation and ``repr`` are generated, so adding a knob is
adding one field here.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields


def knob(default, help: str, *, choices: tuple | None = None, min: float | None = None, max: float | None = None,
         gt: float | None = None, unit: str | None = None, cli: bool = True, show: bool = False):
    """A config field with its metadata. ``unit="px"``: the CLI takes pixel units (/255 in the library);
    ``min``/``max`` are inclusive bounds, ``gt`` an exclusive lower bound; ``show``: always in ``repr``."""
    meta = dict(help=help, choices=choices, min=min, max=max, gt=gt, unit=unit, cli=cli, show=show)
    return field(default=default, metadata=meta)


def _in_pixels(x: float) -> str:
    """A [0,1] amplitude as the pixel levels people give it in (``8/255``)."""
    return f"{round(x * 255, 3):g}/255"


@dataclass(frozen=True)
class ProtectConfig:
    """All knobs of the engine, in library units (eps/alpha as fractions of 1)."""

    method: str = knob("mem-3", "preset this configuration started from", cli=False, show=True)
    eps: float = knob(8 / 255, "L-inf bound of the image noise (at most 127/255: the noise is stored as int8)", gt=0,
                      max=127 / 255, unit="px", show=True)
    alpha: float = knob(1 / 255, "PGD step size", gt=0, unit="px")
    pgd_steps: int = knob(8, "PGD steps per visit of a batch", min=0, show=True)
    noise: str = knob("pgd", "image noise: pgd (error-minimising), random (uniform +-eps), ar (a sample of its "
                      "caption cluster's autoregressive process, nothing optimised: --clusters), conv (what its "
                      "caption cluster's random blur kernel changes, CUDA's poison, clipped to eps) or none",
                      choices=("pgd", "random", "ar", "conv", "none"), show=True)
    noise_block: int = knob(1, "side in px of the squares the noise is constant on (1: per pixel). random noise: "
                            "+-eps with a random sign per square and channel (8: patch-wise colours, as LSP); pgd: "
                            "each step moves a square by the sign of its summed gradient (8: JPEG's blocks and a "
                            "ViT's 8 px patches)", min=1)
    noise_tile: int = knob(1, "period in px of periodic noise: one tile of that side repeated over the image, so "
                           "a texture, the same wherever a crop starts (1: off). random noise: a random tile per "
                           "image; pgd: each step moves the tile by the sign of the gradient summed over its "
                           "copies (8: every 8 px patch of a ViT gets the same offset)", min=1)
    noise_colour: str = knob("rgb", "colour of pgd noise: rgb (each channel its own) or grey (the three channels "
                             "moved together: luminance only, which JPEG's chroma subsampling and coarser chroma "
                             "quantisation do not touch)", choices=("rgb", "grey"))
    trigger_len: int = knob(3, "trigger tokens per caption (0: no trigger)", min=0, show=True)
    shuffle: bool = knob(True, "shuffle caption bodies within the batch during the image step", show=True)
    trigger_position: str = knob("prefix", "where the trigger goes: before the first word (MEM), at a random "
                                 "word of each caption, or after the last word (suffix)",
                                 choices=("prefix", "random", "suffix"))
    trigger_dropout: float = knob(0.0, "rate at which captions are seen without their trigger while optimising",
                                  min=0, max=0.99)
    trigger_vocab: str = knob("safe", "trigger words: safe (common dictionary words, no names, profanity or "
                              "slurs; fit to publish) or any whole word of the tokenizer (research)",
                              choices=("safe", "any"))
    trigger_vocab_min_images: int = knob(0, "trigger words only from those the dataset's captions use in >= N "
                                         "images, counting --public data too (0: any whole word)", min=0)
    eot: str = knob("none", "view the surrogate sees of the noisy image during PGD: none, rrc-flip (random "
                    "resized crop at 0.5-1 of the area + flip), crop-S (bicubic crop at S-1 of the area, no flip: "
                    "crop-0.9 is open_clip_train's default), jpeg (differentiable JPEG, quality 10..95; jpeg-Q or "
                    "jpeg-L-H: quality Q, or drawn from L..H), resize-S "
                    "(to S px and back), or several joined by '|' (one drawn per step)", show=False)
    surrogate_view: str = knob("none", "what the surrogate trains on between data passes, as its own data "
                               "augmentation: the protected images as they are (none) or a view as for --eot "
                               "(rrc-flip, crop-S, jpeg, resize-S, several joined by '|'), so that the noise is fitted "
                               "to a network that learned through a trainer's augmentation")
    stretch: str = knob("bilinear", "how the noise on the model's grid covers a full-size photo: bilinear (smooth) "
                        "or nearest (blocks, sharper after a trainer's resize)", choices=("bilinear", "nearest"))
    grad_blur: float = knob(0.0, "Gaussian sigma (px) on the PGD gradient: low-frequency noise", min=0, max=10)
    adversary_eps: float = knob(0.0, "robust error minimisation (REM): radius of a worst-case perturbation added "
                                "to the surrogate's input, in its training (adversarial training) and in every PGD "
                                "step, so that the noise must stay a shortcut for a network robust to changes of that "
                                "size (0: off; REM uses half the noise's radius)", min=0, max=1, unit="px")
    adversary_steps: int = knob(2, "REM: ascent steps that find that perturbation", min=1)
    ensemble: str = knob("mean-loss", "with several surrogates, what PGD's step follows: the gradient of their mean "
                         "loss (the surrogate with the larger input gradient decides the sign) or the sum of their "
                         "gradients each scaled to the same mean size per image (balanced)",
                         choices=("mean-loss", "balanced"))
    objective: str = knob("minimise", "what PGD does to the surrogate's CLIP loss: minimise it (error-minimising "
                          "noise: EM, MEM) or maximise it (error-maximising noise: TAP)",
                          choices=("minimise", "maximise"))
    target: str = knob("own", "captions the image step pulls each image toward: its own (with its trigger), or "
                       "those of an image in another caption cluster, the clusters permuted (targeted adversarial "
                       "poisoning: with --objective minimise, no shuffle and a surrogate trained on clean data)",
                       choices=("own", "cluster"))
    share: str = knob("none", "what images of one caption cluster share: nothing, the noise pattern, the trigger, "
                      "or both (a shared trigger is drawn per cluster and not changed by HotFlip); or words: one "
                      "noise pattern per caption word, each image's noise the mean of its code words' patterns "
                      "(no trigger needed: the captions already carry the words)",
                      choices=("none", "noise", "trigger", "noise+trigger", "words"))
    clusters: int = knob(64, "caption clusters (k-means on TF-IDF of each image's captions) when --share is set, "
                         "or for --noise ar or conv", min=1)
    code_words: int = knob(3, "--share words: caption words per image whose patterns make its noise", min=1)
    code_min_images: int = knob(10, "--share words: code words are the image's rarest caption words among those "
                                "used by >= N images (so a rare-word filter keeps them)", min=1)
    rounds: int = knob(20, "rounds (surrogate training + a data pass)", min=0, show=True)
    surrogate_steps: int = knob(200, "surrogate training steps per round", min=0, show=True)
    text_rounds: int = knob(5, "rounds with a trigger (HotFlip) update, the first ones", min=0, show=True)
    surrogate_restart: bool = knob(False, "start every round from a new surrogate (fresh random weights of the same "
                                   "architecture, a new optimiser): the noise is tuned against models early in "
                                   "training, where a victim starts, not against one that has fitted it")
    stop_accuracy: float = knob(0.0, "stop early once the surrogate, trained on the protected data, retrieves at "
                                "least this share of its pairs within a batch, both ways, after the text rounds "
                                "(the shortcut is learned; 0: run every round). On a few hundred images the surrogate "
                                "memorises clean pairs as well, and the test stops too early: the round log's "
                                "clean_fit_accuracy (the same check on the pairs before protection) says which",
                                min=0, max=1)
    candidates: int = knob(16, "HotFlip candidates per trigger position", min=1, show=True)
    public_negatives: int = knob(0, "with --public data: clean public pairs added to every image-step batch as "
                                 "negatives, so the noise must set the owner's pairs apart from other people's "
                                 "images and captions, not only from each other (0: the owner's own batch only)",
                                 min=0)
    batch_size: int = knob(128, "batch size of surrogate steps and data passes", min=1)
    surrogate_lr: float = knob(1e-4, "surrogate learning rate", gt=0)
    surrogate_wd: float = knob(0.2, "surrogate weight decay", min=0)
    seed: int = knob(0, "seed of every random draw of the run; mmue protect draws a secret one from the operating "
                     "system unless given (a known seed lets anyone regenerate the triggers)", min=0)

    @property
    def eps_px(self) -> int:
        return int(round(self.eps * 255))

    @property
    def drops_triggers(self) -> bool:
        return bool(self.trigger_dropout and self.trigger_len)

    @property
    def shares_noise(self) -> bool:
        return self.share in ("noise", "noise+trigger", "words")

    @property
    def shares_trigger(self) -> bool:
        return self.share in ("trigger", "noise+trigger") and self.trigger_len > 0

    @property
    def optimises(self) -> bool:
        """Whether rounds change anything: PGD noise, or triggers that HotFlip may change."""
        return self.noise == "pgd" or (self.trigger_len > 0 and self.text_rounds > 0 and not self.shares_trigger)

    def validate(self) -> "ProtectConfig":
        problems = []
        for f in fields(self):
            m, v = f.metadata, getattr(self, f.name)
            if m.get("choices") and v not in m["choices"]:
                problems.append(f"{f.name} must be {'|'.join(m['choices'])} (got {v!r})")
            say = _in_pixels if m.get("unit") == "px" else (lambda x: x)   # the user's unit: levels for eps, alpha
            if m.get("min") is not None and v < m["min"]:
                problems.append(f"{f.name} must be >= {say(m['min'])} (got {say(v)})")
            if m.get("max") is not None and v > m["max"]:
                problems.append(f"{f.name} must be <= {say(m['max'])} (got {say(v)})")
            if m.get("gt") is not None and not v > m["gt"]:
                problems.append(f"{f.name} must be > {say(m['gt'])} (got {say(v)})")
        if self.noise_block > 1 and self.noise == "none":
            problems.append(f"noise_block={self.noise_block} needs image noise (noise pgd or random)")
        if self.noise_tile > 1 and self.noise == "none":
            problems.append(f"noise_tile={self.noise_tile} needs image noise (noise pgd or random)")
        if self.noise_tile > 1 and (self.noise_block > 1 or self.shares_noise):
            problems.append(f"noise_tile={self.noise_tile} is per-image noise of its own: leave noise_block at 1 "
                            "and share at none")
        if self.target != "own" and self.shuffle:
            problems.append(f"target={self.target} needs shuffle off (shuffling would trade the targets within a "
                            "batch)")
        if self.noise_colour != "rgb" and self.noise != "pgd":
            problems.append(f"noise_colour={self.noise_colour} shapes pgd noise only (noise pgd)")
        if self.noise in ("ar", "conv") and (self.noise_block > 1 or self.noise_tile > 1 or self.shares_noise):
            problems.append(f"noise={self.noise} is per-image noise of its own: leave noise_block and noise_tile at 1 "
                            "and share at none or trigger")
        if self.shares_noise and self.noise == "none":
            problems.append(f"share={self.share} needs image noise (noise pgd or random)")
        from .views import parse_view   # the view spec is checked by the part that reads it
        for name in ("eot", "surrogate_view"):
            try:
                parse_view(getattr(self, name))
            except ValueError as e:
                problems.append(f"{name}: {e}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return {**asdict(self), "eps_px": self.eps_px}

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "seed":   # never in logs: it is the key to the triggers
                continue
            if f.metadata.get("show") or (f.default is not MISSING and v != f.default):
                if f.metadata.get("unit") == "px":
                    v = f"{round(v * 255, 3):g}/255"
                elif isinstance(v, str):
                    v = repr(v)
                parts.append(f"{f.name}={v}")
        return f"ProtectConfig({', '.join(parts)})"


def knobs() -> list:
    """The fields a user may set (CLI flags, bench ``protect`` settings), in declaration order."""
    return [f for f in fields(ProtectConfig) if f.metadata.get("cli")]
