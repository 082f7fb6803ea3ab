"""Zero-shot classification: the metric against a brute-force loop, the data readers, the CLI end to end."""
import csv

import pytest
import torch
import torch.nn.functional as F

from mmue import api
from mmue.cli import main
from mmue.data import DataError, write_zeroshot_split
from mmue.data.synth import SHAPES
from mmue.models import create_model, save_model
from mmue.zeroshot import read_classification, zeroshot_metrics


def test_metrics_match_brute_force():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(40, 8, generator=g), dim=-1)
    cls = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    labels = torch.randint(7, (40,), generator=g)
    m = zeroshot_metrics(img, cls, labels, [f"c{i}" for i in range(7)])
    top1 = top5 = 0
    per = {i: [] for i in range(7)}
    for n in range(40):
        sims = [float(img[n] @ cls[c]) for c in range(7)]
        order = sorted(range(7), key=lambda c: -sims[c])
        top1 += order[0] == labels[n]
        top5 += labels[n] in order[:5]
        per[int(labels[n])].append(order[0] == labels[n])
    assert m["acc1"] == pytest.approx(top1 / 40) and m["acc5"] == pytest.approx(top5 / 40)
    recalls = [sum(v) / len(v) for v in per.values() if v]
    assert m["mean_per_class_recall"] == pytest.approx(sum(recalls) / len(recalls))
    assert m["chance_acc1"] == pytest.approx(1 / 7) and m["chance_acc5"] == pytest.approx(5 / 7)
    perfect = zeroshot_metrics(cls[labels], cls, labels, [f"c{i}" for i in range(7)])
    assert perfect["acc1"] == 1.0


def test_readers_folder_and_csv(tmp_path):
    root = write_zeroshot_split(tmp_path, per_class=2, progress=False)
    ds = read_classification(root)
    assert ds.classnames == sorted(SHAPES) and len(ds) == 24 and sorted(set(ds.labels)) == list(range(12))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "label"])
        w.writerows([(str(p.relative_to(tmp_path)), p.parent.name) for p in ds.paths])
    assert read_classification(tmp_path / "labels.csv").labels == ds.labels
    with pytest.raises(DataError, match="label"):
        read_classification(tmp_path / "labels.csv", label_key="class")
    with pytest.raises(DataError, match="no such folder"):
        read_classification(tmp_path / "missing")


def test_eval_zeroshot_cli(tmp_path, capsys):
    write_zeroshot_split(tmp_path, per_class=3, progress=False)
    torch.manual_seed(0)
    save_model(create_model("mmue-tiny-rn"), tmp_path / "run" / "checkpoints", "best")
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--zeroshot", str(tmp_path / "zeroshot"),
                 "--json", str(tmp_path / "z.json"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "chance 8.3%" in out
    z = api.evaluate_zeroshot(tmp_path / "run", tmp_path / "zeroshot", device="cpu")
    assert z["n_images"] == 36 and 0 <= z["acc1"] <= z["acc5"] <= 1 and len(z["per_class_acc1"]) == 12
