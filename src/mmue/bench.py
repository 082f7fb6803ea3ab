"""``mmue bench``: a resumable grid of protection methods x victim architectures x seeds.

Each cell protects the training split with one method (cached per method, strength, surrogate and seed),
trains a victim from scratch on the *written files*, and evaluates it on the clean test split at its last and
best epoch. Cells append one flat JSON line to ``OUT/results.jsonl``; a rerun skips finished cells. A cell whose
defense ends with ``bn-clean`` trains nothing: it evaluates the victim of the same defense without it, with its
BatchNorm statistics re-estimated on the clean originals of its training images.
"""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .defenses import apply_defense, keeps_clean_data, keeps_files, recalibrates, trained_as, uses_augment
from .defenses import validate as validate_defense
from .external import is_external
from .experiments import (copy_fidelity, engine_settings, ensure_protected, last_epoch_zeroshot, load_victim,
                          random_guess_of, train_victim, victim_metrics)
from .fileio import append_jsonl, atomic_write_json, read_jsonl, write_jsonl
from .data import write_builtin
from .data.pairs import read_pairs
from .metrics import KS
from .owner import Owner, concat_csvs, gap_closed, mean_r10, owner_metrics, write_subset
from .protect.manifest import MANIFEST, released_data
from .protect.registry import method_order, resolve
from .models import DEFAULT_MODEL
from .report import write_report
from .train import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    data: str | None = None                 # folder with train.csv/test.csv; None: built-in synth in OUT/data
    methods: list[str] = field(default_factory=lambda: ["clean", "random", "em", "trigger-only", "mem-3", "mem-5"])
    victims: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    surrogate: str = DEFAULT_MODEL
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    strength: str = "low"
    epochs: int | None = None
    protect: dict = field(default_factory=dict)   # extra engine settings (library units)
    defenses: list[str] = field(default_factory=lambda: ["none"])   # see mmue.defenses
    train: dict = field(default_factory=dict)     # victim TrainConfig overrides, e.g. {"lr": 1e-4} to fine-tune
    victim_defenses: dict = field(default_factory=dict)  # per victim, its own defenses (else ``defenses``)
    owner: dict | None = None   # protect only an owner's images (see mmue.owner): {"fraction": 0.01}, {"query": w}
    owner_surrogate: str = "own"  # what the owner's surrogate trains on: "own" images, or "own+rest" (+ the clean rest)
    # protections applied after each protected method's, in order, each to the previous one's released copy (its
    # noise added to theirs): [{"method": "em", "surrogate": "mmue-tiny-rn", "protect": {"eps": 2 / 255}}, ...]
    stack: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "BenchConfig":
        raw = json.loads(Path(path).read_text())
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**raw).validate()

    def validate(self) -> "BenchConfig":
        if self.owner_surrogate not in ("own", "own+rest"):
            raise ValueError(f"owner_surrogate must be 'own' or 'own+rest', got {self.owner_surrogate!r}")
        if self.owner_surrogate != "own" and self.owner is None:
            raise ValueError("owner_surrogate needs an owner")
        if self.owner is not None:
            Owner.parse(self.owner)
        # "protect" holds engine settings and protect's own options (image_format, ...): check the settings
        # now, so that a typo fails at once rather than after the clean victims have trained
        for m in self.methods:
            if m not in ("clean", "absent"):   # resolve names the known methods (`mmue methods`) when m is not one
                resolve(m, self.strength, **engine_settings(self.protect))
            elif m == "absent" and self.owner is None:
                raise ValueError("method 'absent' (trained without the owner's data) needs an owner")
        for i, stage in enumerate(self.stack, 1):
            stray = set(stage) - {"method", "surrogate", "protect"}
            if "method" not in stage or stray:
                raise ValueError(f"stack stage {i}: needs a method, and takes only method, surrogate and protect "
                                 f"(got {sorted(stage)})")
            resolve(stage["method"], self.strength, **engine_settings(stage.get("protect", {})))
        for d in self.defenses + [d for ds in self.victim_defenses.values() for d in ds]:
            validate_defense(d)
        for v in filter(is_external, self.victims):
            augmented = [d for d in self.victim_defenses.get(v, self.defenses) if uses_augment(d) != "none"]
            if augmented:
                raise ValueError(f"victim {v} trains with open_clip_train's own augmentation: give it defenses "
                                 f"without a training augmentation in victim_defenses (not {augmented})")
        for v in self.victims:
            ds = self.victim_defenses.get(v, self.defenses)
            alone = [d for d in ds if recalibrates(d) and trained_as(d) not in ds]
            if alone:   # bn-clean re-estimates a trained victim's statistics: that victim must be in the grid
                raise ValueError(f"victim {v}: defense {alone[0]!r} evaluates the victim trained under "
                                 f"{trained_as(alone[0])!r}; add {trained_as(alone[0])!r} to its defenses")
        stray = set(self.victim_defenses) - set(self.victims)
        if stray:
            raise ValueError(f"victim_defenses names {sorted(stray)}, which are not among victims {self.victims}")
        return self

    def cells(self) -> list[tuple[str, str]]:
        """(victim, defense) pairs of one method and seed, in run order: ``none`` first for each victim (a clean
        victim under a defense that keeps clean data as it is reuses it), ``bn-clean`` ones last (they evaluate a
        victim trained by another cell)."""
        return [(v, d) for v in self.victims
                for d in sorted(self.victim_defenses.get(v, self.defenses),
                                key=lambda d: (d != "none", recalibrates(d)))]

    @property
    def release_settings(self) -> dict:
        """What a protected copy depends on beyond method, strength, surrogate and seed (part of the cell key)."""
        return {**self.protect, **({"stack": self.stack} if self.stack else {})}


def _cell_key(method: str, victim: str, seed: int, defense: str = "none", strength: str = "low",
              surrogate: str = DEFAULT_MODEL, protect: dict | None = None) -> str:
    """What makes a cell: a protected method's copy also depends on its strength, surrogate and engine settings
    (a row of another configuration in the same folder must not pass for this one's); clean data does not."""
    cell = f"{method}|{victim}|{seed}|{defense}"
    if method in ("clean", "absent"):
        return cell
    return f"{cell}|{strength}|{surrogate}|{json.dumps(protect or {}, sort_keys=True)}"


def _row_settings(r: dict) -> dict:
    """A row's ``BenchConfig.release_settings``, as the row recorded them."""
    return {**(r.get("protect") or {}), **({"stack": r["stack"]} if r.get("stack") else {})}


def _row_key(r: dict) -> str:
    return _cell_key(r["method"], r["victim"], r["seed"], r.get("defense", "none"), r.get("strength", "low"),
                     r.get("surrogate", DEFAULT_MODEL), _row_settings(r))


def _victim_dir(out: Path, method: str, victim: str, seed: int, defense: str = "none") -> Path:
    name = victim.replace(":", "-")   # open_clip_train:ARCH
    return out / "victims" / (f"{method}-{name}-s{seed}" + ("" if defense == "none" else f"-{defense}"))


def _with_zeroshot(rows: list[dict], out: Path, zeroshot: Path, device: str) -> list[dict]:
    """Rows of cells finished before the data had a zero-shot split gain its accuracy (results.jsonl rewritten)."""
    missing = [r for r in rows if "last/zeroshot_acc1" not in r and zeroshot.is_dir()
               and (_victim_dir(out, r["method"], r["victim"], r["seed"], r.get("defense", "none"))
                    / "summary.json").exists()]
    if not missing:
        return rows
    for r in missing:
        run = _victim_dir(out, r["method"], r["victim"], r["seed"], r.get("defense", "none"))
        r.update({f"last/zeroshot_{k}": v for k, v in last_epoch_zeroshot(run, zeroshot, device).items()})
    write_jsonl(out / "results.jsonl", rows)
    return rows


def _finished_victim(out: Path, method: str, victim: str, seed: int, defense: str) -> Path | None:
    """The folder of a trained victim of this cell: its own, or for a clean / absent cell that reused the
    undefended victim (a defense that keeps clean data as it is), that one."""
    for d in dict.fromkeys((defense, "none")):
        run = _victim_dir(out, method, victim, seed, d)
        if (run / "summary.json").exists() and (d == defense or (method in ("clean", "absent")
                                                                  and keeps_clean_data(defense))):
            return run
    return None


def _published_view(out: Path, cfg: BenchConfig, row: dict, test_csv: Path, device: str) -> dict:
    """Memorisation *as published* for a protected owner row: its victim (``pub``) and, where this folder trained
    it, the absent one (``pub_absent``, the floor) queried with the owner's protected copy, the images and captions
    the scraper holds. Keys that the row has already are not measured again. Only for scrapers who train on the
    files as published (``keeps_files``): one who re-captioned or re-saved them holds another copy. Not for
    ``bn-clean`` rows either: their victim is another cell's, evaluated here with its own statistics."""
    if not keeps_files(row.get("defense", "none")) or recalibrates(row.get("defense", "none")):
        return {}
    missing = {prefix: run for prefix, method in (("pub", row["method"]), ("pub_absent", "absent"))
               if f"owner/last/{prefix}/image_to_text_R@1" not in row
               and (run := _finished_victim(out, method, row["victim"], row["seed"], row.get("defense", "none")))}
    prot = _release_dirs(out, cfg, row["method"], row["seed"], True)[-1]
    if not missing or not (prot / MANIFEST).exists():
        return {}
    man = json.loads((prot / MANIFEST).read_text())
    copy = released_data(prot, man)
    return {f"owner/last/{k}": v for prefix, run in missing.items()
            for k, v in owner_metrics(run, copy, test_csv, device, "last", prefix=prefix).items()}


def _with_published(rows: list[dict], out: Path, cfg: BenchConfig, test_csv: Path, device: str) -> list[dict]:
    """Owner rows of this configuration's protected copies gain memorisation as published (results.jsonl
    rewritten): rows finished before it was measured, and floors whose absent victim finished after them."""
    if not cfg.owner:
        return rows
    changed = False
    for r in rows:
        mine = (r.get("method") not in ("clean", "absent") and "owner" in r
                and r.get("owner_surrogate", "own") == cfg.owner_surrogate
                and _row_key(r) == _cell_key(r["method"], r["victim"], r["seed"], r.get("defense", "none"),
                                             cfg.strength, cfg.surrogate, cfg.release_settings))
        if mine and (found := _published_view(out, cfg, r, test_csv, device)):
            r.update(found)
            changed = True
    if changed:
        write_jsonl(out / "results.jsonl", rows)
    return rows


# What every cell of a folder depends on, clean ones included, and no row records: a config that changes one of
# these finds rows that would pass for its own, so it needs a folder of its own.
CONTEXT = ("data", "epochs", "train", "owner")


def _release_of(strength: str, surrogate: str, settings: dict, owner_surrogate: str | None) -> dict:
    """What a protected method's copy was made with, beyond its name and seed."""
    return {"strength": strength, "surrogate": surrogate, "settings": settings,
            **({"owner_surrogate": owner_surrogate} if owner_surrogate else {})}


def check_folder(cfg: BenchConfig, out: Path, rows: list[dict]) -> None:
    """Refuse, before any work, a config whose cells would be confused with the finished rows of ``out``: another
    dataset, training recipe or owner (every row depends on them), or another protection under a method name that
    has rows here (strength, surrogate, engine settings, stack, the owner's surrogate data). Its victims and the
    tables, which name a protection by its method, would mix the two. New methods, victims, defenses and seeds are
    what a folder grows by."""
    if not rows:
        return
    # a clean victim is reused where its training file is the same one (not built-in data, written into OUT)
    fix = "give another --out" + (f" (to reuse this folder's clean victims, copy {out / 'victims'}/clean-* there)"
                                  if cfg.data else "") + ", or delete this one"
    stored = out / "bench_config.json"
    if stored.exists():
        old, new = {**BenchConfig().__dict__, **json.loads(stored.read_text())}, cfg.__dict__
        where = lambda d: str(Path(d).resolve()) if d else None   # noqa: E731 (built-in data: None)
        diff = [f"{k} {old[k]!r} (this config: {new[k]!r})" for k in CONTEXT
                if (where(old[k]) != where(new[k]) if k == "data" else old[k] != new[k])]
        if diff:
            raise ValueError(f"{out} holds {len(rows)} finished cells made with {', '.join(diff)}; their figures "
                             f"would be reported as this config's: {fix}")
    owner_surrogate = cfg.owner_surrogate if cfg.owner else None
    mine = _release_of(cfg.strength, cfg.surrogate, cfg.release_settings, owner_surrogate)
    for r in rows:
        if r["method"] in cfg.methods and r["method"] not in ("clean", "absent"):
            theirs = _release_of(r.get("strength", "low"), r.get("surrogate", DEFAULT_MODEL), _row_settings(r),
                                 r.get("owner_surrogate", "own") if "owner" in r else None)
            if theirs != mine:
                diff = [f"{k} {theirs.get(k)!r} (this config: {mine.get(k)!r})" for k in sorted({*theirs, *mine})
                        if theirs.get(k) != mine.get(k)]
                raise ValueError(f"{out} has {r['method']} cells protected with {', '.join(diff)}; one folder holds "
                                 f"one protection per method name: {fix}")


def run_bench(cfg: BenchConfig, out: str | Path, device: str = "auto") -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.validate()
    results_file = out / "results.jsonl"
    finished = read_jsonl(results_file)
    check_folder(cfg, out, finished)
    atomic_write_json(out / "bench_config.json",
                      {**cfg.__dict__, "data": str(Path(cfg.data).resolve()) if cfg.data else None})
    data = Path(cfg.data) if cfg.data else out / "data"
    if not cfg.data and not (data / "test.csv").exists():
        write_builtin(data)
    train_csv, test_csv = data / "train.csv", data / "test.csv"
    done = {_row_key(r): r for r in finished}
    rows = []

    def record(row: dict) -> None:
        append_jsonl(results_file, row)
        rows.append(row)
        done[_row_key(row)] = row
    for seed in cfg.seeds:
        for method in cfg.methods:
            for victim, defense in cfg.cells():
                if _cell_key(method, victim, seed, defense, cfg.strength, cfg.surrogate, cfg.release_settings) in done:
                    continue
                if method in ("clean", "absent") and defense != "none" and keeps_clean_data(defense) \
                        and _cell_key(method, victim, seed) in done:
                    # the same data and the same training as the undefended cell: its victim stands for this one
                    record({**done[_cell_key(method, victim, seed)], "defense": defense, "reused": "none"})
                    continue
                owned = _owner_split(cfg, train_csv, out, seed) if cfg.owner else None
                # original: the rows the victim's data was made from, in its order (for oracle-captions)
                if method == "clean":
                    victim_train, protection = train_csv, {}
                    original, released = victim_train, f"clean-s{seed}"
                elif method == "absent":
                    victim_train, protection = owned["rest"], {}
                    original, released = victim_train, f"absent-s{seed}"
                else:
                    original = train_csv
                    source = owned["owner"] if owned else train_csv
                    prot, *stages = _release_dirs(out, cfg, method, seed, bool(owned))
                    public = {"public": owned["rest"]} if owned and cfg.owner_surrogate == "own+rest" else {}
                    man = ensure_protected(source, prot, method, cfg.strength, seed, device,
                                           surrogate=cfg.surrogate, **public, **cfg.protect)
                    if cfg.stack:
                        prot, man = _stacked(cfg, prot, stages, man, source, seed, device, public)
                    released = prot.name   # unique per release in this folder (the CSV sits in publish/ for all)
                    victim_train = released_data(prot, man) or prot / train_csv.name
                    if owned:   # the scraper's mix: everyone else's clean rows and the owner's protected copy
                        victim_train = concat_csvs([owned["rest"], victim_train],
                                                   owned["rest"].parent / f"mix-{method}.csv")
                        original = concat_csvs([owned["rest"], owned["owner"]],
                                               owned["rest"].parent / "mix-original.csv")
                    protection = {"mean_psnr_db": man["mean_psnr_db"], "max_linf_px": man["max_linf_px"],
                                  "generation_s": man["generation_s"],
                                  **({"noise_kept": man["mean_noise_kept"]} if "mean_noise_kept" in man else {})}
                trained = trained_as(defense)
                # bn-clean: the clean images its statistics are re-estimated on (the originals of its training rows)
                bn_images = original if recalibrates(defense) else None
                if bn_images is not None:   # the victim of the same cell without bn-clean, run before this one
                    run = _finished_victim(out, method, victim, seed, trained)
                    if run is None:
                        raise RuntimeError(f"{method} / {victim} / seed {seed}: no finished victim under {trained!r} "
                                           f"for {defense!r} to evaluate")
                else:
                    defended = apply_defense(victim_train, defense, out / "defended" / f"{released}-{defense}", seed,
                                             original=original)
                    run = _victim_dir(out, method, victim, seed, defense)
                    tcfg = TrainConfig(**{"seed": seed, "augment": uses_augment(defense),
                                          **({"epochs": cfg.epochs} if cfg.epochs else {}), **cfg.train})
                    train_victim(defended, test_csv, run, victim, tcfg, device)
                bn_cache: dict = {}   # the clean images' encoding, read once for the row's metrics and the owner's
                m = victim_metrics(run, test_csv, device, data / "zeroshot", bn_images, bn_cache)
                row = {"method": method, "victim": victim, "seed": seed, "defense": defense, "surrogate": cfg.surrogate,
                       "strength": cfg.strength, **protection,
                       **({"trained_as": trained, "bn_images": str(bn_images)} if bn_images is not None else {}),
                       **({"protect": cfg.protect} if cfg.protect and protection else {}),
                       **({"stack": cfg.stack} if cfg.stack and protection else {}),
                       **{f"last/{k}": v for k, v in m.items() if k != "best"},
                       **{f"best/{k}": v for k, v in m["best"].items()},
                       **{f"init/{k}": v for k, v in m.get("init", {}).items()},
                       **{f"last/zeroshot_{k}": v for k, v in m.get("zeroshot", {}).items()}}
                if owned:
                    owner = Owner.parse(cfg.owner)
                    row.update({"owner": owner.label(), "owner_images": owned["n"],
                                "owner_surrogate": cfg.owner_surrogate,
                                **{f"owner/last/{k}": v for k, v in
                                   owner_metrics(run, owned["owner"], test_csv, device, "last", owner,
                                                 model=load_victim(run, device, "last", bn_images, bn_cache)
                                                 if bn_images is not None else None).items()}})
                    if method not in ("clean", "absent"):
                        row.update(_published_view(out, cfg, row, test_csv, device))
                record(row)
    rows = _with_zeroshot(read_jsonl(results_file), out, data / "zeroshot", device)
    rows = _with_published(rows, out, cfg, test_csv, device)
    seed0 = cfg.seeds[0]
    tables = {f"{which} epoch": summary_table(rows, test_csv, which) for which in ("last", "best")}
    if len({r.get("defense", "none") for r in rows}) > 1:
        for v in dict.fromkeys(r["victim"] for r in rows):
            for k in (1, 10):
                tables[f"methods x defenses, {v}, R@{k}"] = defense_matrix(rows, v, k, test_csv)
    if len({(r["victim"], r.get("defense", "none")) for r in rows}) > 1:
        tables["worst case over the attackers (victims x defenses)"] = worst_case_table(rows, test_csv)
    if any("owner/last/mem/image_to_text_R@1" in r for r in rows):
        tables["the owner's view"] = owner_table(rows)
    if any("owner/last/gen/image_to_text_R@1" in r for r in rows):
        tables["the owner's concept"] = owner_table(rows, "gen")
    if any("owner/last/pub/image_to_text_R@1" in r for r in rows):
        tables["the owner's photos as published"] = owner_published_table(rows)
    for kind, title in (("mem", "the owner's worst case over the scrapers"),
                        ("gen", "the owner's concept: worst case over the scrapers")):
        scrapers = {(r["victim"], r.get("defense", "none")) for r in rows
                    if f"owner/last/{kind}/image_to_text_R@1" in r}
        if len(scrapers) > 1:
            tables[title] = owner_worst_case_table(rows, kind)
    if any("last/zeroshot_acc1" in r for r in rows):
        tables["zero-shot classification (last epoch)"] = zeroshot_table(rows)
    if any("init/image_to_text_R@1" in r for r in rows):
        tables["learning gain (last epoch minus before training)"] = summary_table(rows, None, "gain")
    # the released images of the first MEM method (else the first protected one): noise and triggers both show
    # (a stacked release is shown as released, with the time of all its stages)
    released = [_release_dirs(out, cfg, m, seed0, bool(cfg.owner))
                for m in sorted(cfg.methods, key=lambda m: not m.startswith("mem"))]
    stages = next((dirs for dirs in released if (dirs[-1] / MANIFEST).exists()), [])
    shown = stages[-1] if stages else None
    seconds = sum(json.loads((d / MANIFEST).read_text())["generation_s"] for d in stages) if stages else None
    write_report(out, f"MMUE bench ({cfg.strength}, surrogate {cfg.surrogate})", tables,
                 {f"{m} / {v}": _victim_dir(out, m, v, seed0) for m in cfg.methods for v in cfg.victims},
                 shown, (out / "owner" / f"s{seed0}" / "owner.csv" if cfg.owner else train_csv) if shown else None,
                 generation_s=seconds, built_on=stages[:-1],
                 notes=[f"seeds {cfg.seeds}; curves show seed {seed0} of this run's methods and victims",
                        "victims trained on the written files (from scratch; mmue-effl0-minilm from pretrained "
                        "towers) and evaluated on the clean test split; tables cover every finished cell in "
                        "results.jsonl"])
    return rows


def _release_dirs(out: Path, cfg: BenchConfig, method: str, seed: int, owned: bool) -> list[Path]:
    """The folders of ``method``'s protection at ``seed``: its own, then one per ``cfg.stack`` stage (each named
    after the one it builds on); the last is what is released."""
    dirs = [out / "protected" / (f"{method}-{cfg.strength}-{cfg.surrogate}-s{seed}" + ("-owner" if owned else "")
                                 + ("-public" if cfg.owner_surrogate == "own+rest" else ""))]
    for i, stage in enumerate(cfg.stack, 1):
        dirs.append(dirs[-1].parent / f"{dirs[-1].name}+{i}-{stage['method']}-{stage.get('surrogate', cfg.surrogate)}")
    return dirs


def _stacked(cfg: BenchConfig, prot: Path, stages: list[Path], man: dict, source: Path, seed: int,
             device: str, public: dict) -> tuple[Path, dict]:
    """The release after ``cfg.stack``: each stage protects the previous one's published copy into its folder of
    ``stages`` (an owner's stage with ``public``, the rest of the mix, as the first stage had it). Its manifest's
    fidelity is measured against ``source``, the original images, and its generation time is the sum of the
    stages'."""
    seconds = man["generation_s"]
    for stage, nxt in zip(cfg.stack, stages):
        man = ensure_protected(released_data(prot, man), nxt, stage["method"], cfg.strength, seed,
                               device, surrogate=stage.get("surrogate", cfg.surrogate), **public,
                               **stage.get("protect", {}))
        prot, seconds = nxt, seconds + man["generation_s"]
    stamp = prot / "fidelity.json"   # every image read twice: once per release, not once per cell
    fid = json.loads(stamp.read_text()) if stamp.exists() else {}
    if fid.get("source") != str(source):
        psnr_db, linf = copy_fidelity(source, released_data(prot, man))
        fid = {"source": str(source), "mean_psnr_db": psnr_db, "max_linf_px": linf}
        atomic_write_json(stamp, fid)
    return prot, {**man, "mean_psnr_db": fid["mean_psnr_db"], "max_linf_px": fid["max_linf_px"],
                  "generation_s": round(seconds, 1)}


def _owner_split(cfg: BenchConfig, train_csv: Path, out: Path, seed: int) -> dict:
    """The owner's clean rows and everyone else's, as CSVs in ``OUT/owner/s{seed}`` (written once)."""
    folder = out / "owner" / f"s{seed}"
    files = {"owner": folder / "owner.csv", "rest": folder / "rest.csv"}
    if not (folder / "done.json").exists():
        pairs = read_pairs(train_csv)
        mine = Owner.parse(cfg.owner).images(pairs, seed)
        write_subset(pairs, mine, files["owner"])
        write_subset(pairs, sorted(set(range(pairs.n_images)) - set(mine)), files["rest"])
        atomic_write_json(folder / "done.json", {"owner": cfg.owner, "n": len(mine), "of": pairs.n_images})
    split = json.loads((folder / "done.json").read_text())
    if split["owner"] != cfg.owner:   # a folder started for another owner (check_folder sees only finished rows)
        raise ValueError(f"{folder} holds the split of owner {split['owner']!r}, not {cfg.owner!r}: give another "
                         "--out, or delete this one")
    return {**files, "n": split["n"]}


OWNER_VIEWS = {
    "mem": "owner's memorisation: queries = the owner's clean training captions / images, gallery = the owner's "
           "images + the test split",
    "gen": "owner's concept learned (semantic owners): queries = the test pairs of the owner's concept, gallery = "
           "the whole test split",
}


def owner_table(rows: list[dict], kind: str = "mem") -> str:
    """The owner's recall per victim (absent / clean / protected ...), mean over seeds, and the share of the
    absent-clean gap each protection closes (on the mean of R@10 in both directions). ``kind``: ``mem``
    (memorisation) or ``gen`` (generalisation to the concept's test pairs), see ``mmue.owner``."""
    rows = [r for r in rows if f"owner/last/{kind}/image_to_text_R@1" in r]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["owner"], r["victim"], r.get("defense", "none"), r["method"]), []).append(r)
    keys = [f"{d}_R@{k}" for k in (1, 10) for d in ("image_to_text", "text_to_image")]
    mean = lambda rs, k: statistics.mean(100 * r[f"owner/last/{kind}/{k}"] for r in rs)   # noqa: E731
    has_random = all(f"owner/last/{kind}/random_text_to_image_R@10" in r for r in rows)
    # each name column as wide as its longest entry, so that long names (composed defenses) never run together
    ow, vw, dw, mw = (_width((k[i] for k in groups), w) for i, w in enumerate((24, 15, 12, 16)))
    lines = [f"({OWNER_VIEWS[kind]}; last epoch, %, mean over n seeds; gap closed = (clean - method) / "
             "(clean - absent) on mean R@10)",
             f"{'owner':<{ow}}{'victim':<{vw}}{'defense':<{dw}}{'method':<{mw}}{'n':>3}"
             + "".join(f"{k.replace('image_to_text', 'i2t').replace('text_to_image', 't2i'):>10}" for k in keys)
             + f"{'gap closed':>12}" + (f"{'random R@10':>13}" if has_random else "")]
    order = {"absent": -3, "clean": -2}
    r10 = {k: statistics.mean(v.values()) for k, v in _owner_r10(rows, kind).items()}
    for (o, v, d, m), rs in sorted(groups.items(),
                                   key=lambda kv: (kv[0][:3], order.get(kv[0][3], method_order(kv[0][3])))):
        ref = {x: r10.get((o, v, d, x)) for x in ("absent", "clean")}
        gap = (gap_closed(ref["absent"], ref["clean"], r10[(o, v, d, m)])
               if ref["absent"] is not None and ref["clean"] is not None and m not in ("absent", "clean")
               else float("nan"))
        line = (f"{o:<{ow}}{v:<{vw}}{d:<{dw}}{m:<{mw}}{len(rs):>3}" + "".join(f"{mean(rs, k):>10.1f}" for k in keys)
                + (f"{gap:>12.2f}" if gap == gap else f"{'':>12}"))
        if has_random:
            line += f"{100 * statistics.mean(r[f'owner/last/{kind}/random_text_to_image_R@10'] for r in rs):>13.2f}"
        lines.append(line)
    return "\n".join(lines)


def owner_published_table(rows: list[dict]) -> str:
    """Per protected copy, the owner's memorisation R@10 on the clean originals beside the same queries made with
    the copy as published (what the scraper holds), and the gap closed by each: noise that merely hides the
    originals from a model that memorised the noisy copy keeps the first and loses the second. The floor as
    published is the absent victim queried with the same copy (where this folder trained it, else on the
    originals, marked *); the ceiling is the clean victim on the originals, what publishing them exposes."""
    def r10(r: dict, kind: str) -> float:
        return 100 * mean_r10(r, f"owner/last/{kind}/")

    def fmt(x: float | None, w: int) -> str:
        return f"{x:>{w}.1f}" if x is not None else f"{'-':>{w}}"

    def gap(floor: float | None, ceiling: float | None, x: float) -> str:
        # no gap to close where the floor reaches the ceiling (noise that makes the copy easier to find)
        ok = floor is not None and ceiling is not None and ceiling > floor
        return f"{gap_closed(floor, ceiling, x):>7.2f}" if ok else f"{'-':>7}"
    mine = [r for r in rows if "owner/last/pub/image_to_text_R@1" in r and keeps_files(r.get("defense", "none"))]
    groups: dict[tuple, list[dict]] = {}
    for r in mine:
        groups.setdefault((r["owner"], r["victim"], r.get("defense", "none"), r["method"]), []).append(r)
    ref, mean = _owner_r10(rows, "mem"), statistics.mean
    ow, vw, dw, mw = (_width((k[i] for k in groups), w) for i, w in enumerate((24, 15, 12, 16)))
    lines = ["(owner's memorisation R@10, mean of both directions, last epoch, %, mean over n seeds: queries and "
             "gallery as on the originals, or with the owner's copy as published; gap closed = (clean - method) / "
             "(clean - absent); * = floor on the originals: this folder has no absent victim of that cell)",
             f"{'owner':<{ow}}{'victim':<{vw}}{'defense':<{dw}}{'method':<{mw}}{'n':>3}{'clean':>8}"
             f"{'absent':>9}{'originals':>11}{'gap':>7}{'absent pub':>12}{'published':>11}{'gap':>7}"]
    for (o, v, d, m), rs in sorted(groups.items(), key=lambda kv: (kv[0][:3], method_order(kv[0][3]))):
        clean, absent = ref.get((o, v, d, "clean")), ref.get((o, v, d, "absent"))
        seeds = [r["seed"] for r in rs]
        clean = mean(clean[s] for s in seeds if s in clean) if clean and set(seeds) & set(clean) else None
        absent = mean(absent[s] for s in seeds if s in absent) if absent and set(seeds) & set(absent) else None
        orig, pub = mean(r10(r, "mem") for r in rs), mean(r10(r, "pub") for r in rs)
        floors = [r10(r, "pub_absent") for r in rs if "owner/last/pub_absent/image_to_text_R@10" in r]
        floor = mean(floors) if len(floors) == len(rs) else absent
        star = "" if len(floors) == len(rs) else "*"
        lines.append(f"{o:<{ow}}{v:<{vw}}{d:<{dw}}{m:<{mw}}{len(rs):>3}{fmt(clean, 8)}{fmt(absent, 9)}"
                     f"{orig:>11.1f}{gap(absent, clean, orig)}"
                     + (f"{floor:>11.1f}{star:1}" if floor is not None else f"{'-':>12}")
                     + f"{pub:>11.1f}{gap(floor, clean, pub)}")
    return "\n".join(lines)


def _owner_r10(rows: list[dict], kind: str) -> dict[tuple, dict[int, float]]:
    """The owner's R@10 in %, mean of both directions, per (owner, victim, defense, method) and seed."""
    key = f"owner/last/{kind}/"
    r10: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if f"{key}image_to_text_R@10" in r:
            v = 100 * mean_r10(r, key)
            r10.setdefault((r["owner"], r["victim"], r.get("defense", "none"), r["method"]), {})[r["seed"]] = v
    return r10


def owner_worst_case_table(rows: list[dict], kind: str = "mem") -> str:
    """Per owner and protection, the scraper (victim / defense) that learns most about the owner: the lowest gap
    closed among the scrapers whose absent and clean victims were measured too (seed by seed beside), and the
    most the owner is found above the absent victim (R@10 in points: the goal is <= 1). Mean R@10 of both
    directions, as in ``owner_table``."""
    r10, mean = _owner_r10(rows, kind), statistics.mean
    worst: dict[tuple[str, str], list[tuple]] = {}
    for (o, v, d, m), by_seed in r10.items():
        absent, clean = r10.get((o, v, d, "absent")), r10.get((o, v, d, "clean"))
        if m in ("absent", "clean") or not absent or not clean:
            continue
        gap = gap_closed(mean(absent.values()), mean(clean.values()), mean(by_seed.values()))
        seeds = [gap_closed(absent[s], clean[s], x) for s, x in sorted(by_seed.items()) if s in absent and s in clean]
        worst.setdefault((o, m), []).append((gap, f"{v} / {d}", seeds, mean(by_seed.values()) - mean(absent.values())))
    rows_out = []
    for (o, m), cells in sorted(worst.items(), key=lambda kv: (kv[0][0], method_order(kv[0][1]))):
        gap, who, seeds, _ = min(cells, key=lambda c: (c[0] != c[0], c[0]))   # nan (clean = absent) last
        above, who_above = max((c[3], c[1]) for c in cells)
        rows_out.append((o, m, len(cells), gap, who, ", ".join(f"{g:.2f}" for g in seeds), above, who_above))
    # columns as wide as their longest entry (owner labels and victim / defense names vary in length)
    ow, mw, bw, sw = (_width((r[i] for r in rows_out), w) for i, w in ((0, 24), (1, 16), (4, 28), (5, 16)))
    lines = [f"({OWNER_VIEWS[kind].split(':')[0]}, last epoch; over the scrapers (victim / defense) measured with "
             "their absent and clean victims: the lowest gap closed and the most R@10 above never publishing, in "
             "points of the mean of both directions; goal: <= 1)",
             f"{'owner':<{ow}}{'method':<{mw}}{'scrapers':>9}{'worst gap closed':>18}  {'by':<{bw}}{'per seed':<{sw}}"
             f"{'R@10 above absent':>18}  by"]
    for o, m, n, gap, who, per_seed, above, who_above in rows_out:
        lines.append(f"{o:<{ow}}{m:<{mw}}{n:>9}{gap:>18.2f}  {who:<{bw}}{per_seed:<{sw}}{above:>18.1f}  {who_above}")
    return "\n".join(lines)


def _width(names, least: int, pad: int = 2) -> int:
    """A name column: ``least`` wide, or ``pad`` more than its longest entry, so that long names never run
    into the next column."""
    return max([least, *(len(n) + pad for n in names)])


def _method_width(methods) -> int:
    """The method column: 14 wide, or one more than the longest name (mem-3-anypos-blend)."""
    return _width(methods, 14, pad=1)


def defense_matrix(rows: list[dict], victim: str, k: int = 1, test_csv: Path | None = None) -> str:
    """Methods x defenses for one victim: last-epoch i2t / t2i R@k in %, mean over seeds (n seeds beside)."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["victim"] == victim:
            cells.setdefault((r["method"], r.get("defense", "none")), []).append(r)
    methods = list(dict.fromkeys(m for m, _ in cells))
    defenses = list(dict.fromkeys(d for _, d in cells))
    defenses.sort(key=lambda d: d != "none")
    w, mw = _width(defenses, 18), _method_width(methods)   # a composed name is long
    lines = [f"(last epoch, {victim}: i2t / t2i R@{k} in %, mean over n seeds)",
             f"{'method':<{mw}}" + "".join(f"{d:>{w}}" for d in defenses)]
    for m in methods:
        row = f"{m:<{mw}}"
        for d in defenses:
            rs = cells.get((m, d), [])
            if not rs:
                row += f"{'-':>{w}}"
                continue
            i2t = statistics.mean(100 * r[f"last/image_to_text_R@{k}"] for r in rs)
            t2i = statistics.mean(100 * r[f"last/text_to_image_R@{k}"] for r in rs)
            row += f"{f'{i2t:.1f} / {t2i:.1f} ({len(rs)})':>{w}}"
        lines.append(row)
    if test_csv is not None:
        rg = random_guess_of(test_csv)
        g = f"{100 * rg[f'image_to_text_R@{k}']:.2f} / {100 * rg[f'text_to_image_R@{k}']:.2f}"
        lines.append(f"{'random guess':<{mw}}{g:>{w}}")
    return "\n".join(lines)


def worst_case(rows: list[dict], method: str, key: str, which: str = "last") -> tuple[float, str, int]:
    """The attacker (victim / defense) that learns most from ``method``'s release on ``key``, by mean over
    seeds: (value in %, "victim / defense", seeds averaged)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["method"] == method:
            cells.setdefault((r["victim"], r.get("defense", "none")), []).append(100 * r[f"{which}/{key}"])
    (v, d), xs = max(cells.items(), key=lambda kv: statistics.mean(kv[1]))
    return statistics.mean(xs), f"{v} / {d}", len(xs)


def worst_case_table(rows: list[dict], test_csv: Path | None = None, which: str = "last") -> str:
    """Per method, the worst case over every victim x defense measured: the highest mean-over-seeds recall
    in each direction at R@1 and R@10, and which attacker reached it."""
    methods = sorted(dict.fromkeys(r["method"] for r in rows), key=method_order)
    n_att = {m: len({(r["victim"], r.get("defense", "none")) for r in rows if r["method"] == m}) for m in methods}
    keys = [f"{d}_R@{k}" for k in (1, 10) for d in ("image_to_text", "text_to_image")]
    mw = _method_width(methods)
    lines = [f"({which} epoch, %: the highest mean over seeds among the attackers measured; attacker = victim / "
             "defense that reached it)",
             f"{'method':<{mw}}{'attackers':>10}" + "".join(
                 f"{k.replace('image_to_text', 'i2t').replace('text_to_image', 't2i'):>10}  {'by':<34}" for k in keys)]
    for m in methods:
        row = f"{m:<{mw}}{n_att[m]:>10}"
        for k in keys:
            v, who, n = worst_case(rows, m, k, which)
            row += f"{v:>10.1f}  {f'{who} ({n})':<34}"
        lines.append(row.rstrip())
    if test_csv is not None:
        rg = random_guess_of(test_csv)
        lines.append(f"{'random guess':<{mw + 10}}" + "".join(f"{100 * rg[k]:>10.2f}  {'':<34}" for k in keys).rstrip())
    return "\n".join(lines)


def summary_table(rows: list[dict], test_csv: Path | None = None, which: str = "last") -> str:
    """Mean ± spread (half range) over seeds, in %, per method and victim; ``which``: last, best or gain
    (last epoch minus before training: the learning gain, for rows that recorded it)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["victim"], r.get("defense", "none")), []).append(r)
    keys = [f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in KS]
    show_defense = any(d != "none" for _, _, d in groups)   # the column only where a defense was applied
    dw = 18 if show_defense else 0
    mw = _method_width([m for m, _, _ in groups])
    head = (f"{'method':<{mw}}{'victim':<19}{'defense' if dw else '':<{dw}}{'n':>3}"
            + "".join(f"{k.replace('image_to_text', 'i2t').replace('text_to_image', 't2i'):>13}" for k in keys))
    title = ("(learning gain: last epoch minus before training, points of %, mean ± half-range over seeds)"
             if which == "gain" else f"({which} epoch, %, mean ± half-range over seeds)")
    lines = [title, head]
    groups = dict(sorted(groups.items(), key=lambda kv: (method_order(kv[0][0]), kv[0][1])))
    for (method, victim, defense), rs in groups.items():
        if which == "gain":
            rs = [r for r in rs if f"init/{keys[0]}" in r]
            if not rs:
                continue
        cells = []
        for k in keys:
            if which == "gain":  # what training on the data taught the victim
                v = [100 * (r[f"last/{k}"] - r[f"init/{k}"]) for r in rs]
            else:
                v = [100 * r[f"{which}/{k}"] for r in rs]
            cells.append(f"{statistics.mean(v):5.1f} ± {(max(v) - min(v)) / 2:3.1f}")
        lines.append(f"{method:<{mw}}{victim:<19}{defense if dw else '':<{dw}}{len(rs):>3}"
                     + "".join(f"{c:>13}" for c in cells))
    if test_csv is not None:
        rg = random_guess_of(test_csv)
        lines.append(f"{'random guess':<{mw + 22 + dw}}" + "".join(f"{100 * rg[k]:>13.2f}" for k in keys))
    return "\n".join(lines)


def zeroshot_table(rows: list[dict]) -> str:
    """Zero-shot top-1 / top-5 accuracy in %, mean ± half-range over seeds, chance level beside."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if "last/zeroshot_acc1" in r:
            groups.setdefault((r["method"], r["victim"], r.get("defense", "none")), []).append(r)
    groups = dict(sorted(groups.items(), key=lambda kv: (method_order(kv[0][0]), kv[0][1])))
    lines = ["(zero-shot classification of the last epoch, %, mean ± half-range over seeds)",
             f"{'method':<18}{'victim':<19}{'defense':<14}{'n':>3}{'top-1':>14}{'top-5':>14}"]
    for (m, v, d), rs in groups.items():
        cells = []
        for k in ("acc1", "acc5"):
            x = [100 * r[f"last/zeroshot_{k}"] for r in rs]
            cells.append(f"{statistics.mean(x):5.1f} ± {(max(x) - min(x)) / 2:3.1f}")
        lines.append(f"{m:<18}{v:<19}{d:<14}{len(rs):>3}" + "".join(f"{c:>14}" for c in cells))
    r0 = next(iter(groups.values()))[0]
    chance = [100 * r0[f"last/zeroshot_chance_{k}"] for k in ("acc1", "acc5")]
    lines.append(f"{'chance':<54}" + "".join(f"{c:>14.1f}" for c in chance))
    return "\n".join(lines)
