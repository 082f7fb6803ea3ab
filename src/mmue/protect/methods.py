"""Protection methods and strength presets: every method is a configuration of the one MEM engine."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class ProtectConfig:
    """All knobs of the engine, in library units (eps/alpha as fractions of 1)."""

    method: str = "mem"
    eps: float = 8 / 255          # L∞ bound of the image noise
    alpha: float = 1 / 255        # PGD step
    pgd_steps: int = 8            # PGD steps per visit of a batch
    noise: str = "pgd"            # "pgd" (error-minimising), "random" (uniform ±eps) or "none"
    trigger_len: int = 3          # k tokens prepended to every caption of an image (0: no trigger)
    shuffle: bool = True          # shuffle caption bodies within the batch during the image step
    trigger_position: str = "prefix"  # "prefix" (MEM) or "random": a word boundary drawn per caption
    trigger_dropout: float = 0.0  # chance a caption is seen without its trigger (surrogate + image step)
    eot: str = "none"             # PGD through "rrc-flip" (random-resized-crop + flip) or "jpeg" (quality 10..95)
    grad_blur: float = 0.0        # >0: Gaussian sigma (px) on the PGD gradient before its sign: low-frequency noise
    trigger_vocab_min_images: int = 0  # >0: trigger words only from those the captions of >= this many images use
    rounds: int = 20
    surrogate_steps: int = 200    # surrogate training steps per round
    text_rounds: int = 5          # the text (HotFlip) step runs in the first rounds only
    candidates: int = 16          # HotFlip candidates per position
    batch_size: int = 128
    surrogate_lr: float = 1e-4
    surrogate_wd: float = 0.2
    seed: int = 0
    formulation: str = "efficient"  # "naive" recomputes both encoders everywhere (benchmark/reference only)

    @property
    def eps_px(self) -> int:
        return int(round(self.eps * 255))

    @property
    def drops_triggers(self) -> bool:
        return bool(self.trigger_dropout and self.trigger_len)

    @property
    def optimises(self) -> bool:
        return self.noise == "pgd" or self.trigger_len > 0

    def validate(self) -> "ProtectConfig":
        problems = []
        if not 0 < self.eps <= 1:
            problems.append(f"eps must be in (0, 1] (got {self.eps})")
        if self.noise not in ("pgd", "random", "none"):
            problems.append(f"noise must be pgd|random|none (got {self.noise!r})")
        if self.trigger_position not in ("prefix", "random"):
            problems.append(f"trigger_position must be prefix|random (got {self.trigger_position!r})")
        if not 0 <= self.trigger_dropout < 1:
            problems.append(f"trigger_dropout must be in [0, 1) (got {self.trigger_dropout})")
        if self.eot not in ("none", "rrc-flip", "jpeg"):
            problems.append(f"eot must be none|rrc-flip|jpeg (got {self.eot!r})")
        if not 0 <= self.grad_blur <= 10:
            problems.append(f"grad_blur must be in [0, 10] px (got {self.grad_blur})")
        if self.formulation not in ("efficient", "naive"):
            problems.append(f"formulation must be efficient|naive (got {self.formulation!r})")
        for k in ("pgd_steps", "trigger_len", "rounds", "surrogate_steps", "text_rounds", "trigger_vocab_min_images"):
            if getattr(self, k) < 0:
                problems.append(f"{k} must be >= 0")
        for k in ("candidates", "batch_size"):
            if getattr(self, k) < 1:
                problems.append(f"{k} must be >= 1")
        if self.alpha <= 0 or self.surrogate_lr <= 0:
            problems.append("alpha and surrogate_lr must be > 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def _robustness(self) -> str:
        extra = [f"trigger_position={self.trigger_position}"] if self.trigger_position != "prefix" else []
        extra += [f"trigger_dropout={self.trigger_dropout}"] if self.trigger_dropout else []
        extra += [f"eot={self.eot}"] if self.eot != "none" else []
        extra += [f"grad_blur={self.grad_blur}"] if self.grad_blur else []
        extra += [f"trigger_vocab_min_images={self.trigger_vocab_min_images}"] if self.trigger_vocab_min_images else []
        return "".join(", " + e for e in extra)

    def to_dict(self) -> dict:
        return {**asdict(self), "eps_px": self.eps_px}

    def __repr__(self) -> str:
        return (f"ProtectConfig(method={self.method!r}, eps={self.eps_px}/255, noise={self.noise}, "
                f"trigger_len={self.trigger_len}{self._robustness}, shuffle={self.shuffle}, rounds={self.rounds}x{self.surrogate_steps}, "
                f"pgd_steps={self.pgd_steps}, text_rounds={self.text_rounds}, candidates={self.candidates})")


METHODS: dict[str, dict] = {
    "mem": dict(noise="pgd", trigger_len=3, shuffle=True),
    "mem-3": dict(noise="pgd", trigger_len=3, shuffle=True),
    "mem-5": dict(noise="pgd", trigger_len=5, shuffle=True),
    "em": dict(noise="pgd", trigger_len=0, shuffle=False),          # unimodal error minimisation, CLIP loss
    "random": dict(noise="random", trigger_len=0, shuffle=False, rounds=0),
    "trigger-only": dict(noise="none", trigger_len=3, shuffle=False),
    # robustness variants (issue #5): the faithful "mem-3" stays the reference
    "mem-3-anypos": dict(noise="pgd", trigger_len=3, shuffle=True, trigger_position="random"),
    "mem-3-drop": dict(noise="pgd", trigger_len=3, shuffle=True, trigger_dropout=0.5),
    "mem-3-robust": dict(noise="pgd", trigger_len=3, shuffle=True, trigger_position="random", trigger_dropout=0.5),
}
# mem-3-robust whose trigger words blend in: only words the dataset's captions use in >= 10 images
METHODS["mem-3-blend"] = {**METHODS["mem-3-robust"], "trigger_vocab_min_images": 10}
# mem-3-anypos with mem-3-blend's vocabulary: triggers always present (no dropout), anywhere, in common words
METHODS["mem-3-anypos-blend"] = {**METHODS["mem-3-anypos"], "trigger_vocab_min_images": 10}
# mem-3-robust whose noise is optimised through a differentiable JPEG (the attacker's re-save)
METHODS["mem-3-jpeg"] = {**METHODS["mem-3-robust"], "eot": "jpeg"}
# mem-3-robust with low-frequency noise: the sign of a Gaussian-smoothed gradient
METHODS["mem-3-smooth"] = {**METHODS["mem-3-robust"], "grad_blur": 2.0}

# Reference constants are "high"; the lower presets trade efficacy for time on small machines.
STRENGTHS: dict[str, dict] = {
    "low": dict(rounds=3, surrogate_steps=40, text_rounds=1, candidates=8, pgd_steps=6),  # ~3 min on 2 CPU cores
    "mid": dict(rounds=10, surrogate_steps=100, text_rounds=4),
    "high": dict(rounds=20, surrogate_steps=200, text_rounds=5),
}


def resolve(method: str = "mem", strength: str = "high", **overrides) -> ProtectConfig:
    """Method preset, then strength preset, then explicit overrides (``None`` values are ignored)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
    known = {f.name for f in fields(ProtectConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    cfg = replace(ProtectConfig(), method=method, **STRENGTHS[strength])
    cfg = replace(cfg, **{k: v for k, v in METHODS[method].items() if not (k == "rounds" and "rounds" in overrides)})
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    return cfg.validate()
