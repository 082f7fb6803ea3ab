"""benchmarks/bn_recalibrate.py: BatchNorm statistics re-estimated on clean images, nothing else changed."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bn_recalibrate  # noqa: E402


class Tower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.bn = torch.nn.BatchNorm2d(3)

    def encode_image(self, x):
        return self.bn(self.conv(x))


def test_statistics_come_from_the_clean_images_and_the_weights_stay():
    torch.manual_seed(0)
    m = Tower()
    m.bn.running_mean.fill_(100.0)          # statistics of some other (noisy) data
    weights = {k: v.clone() for k, v in m.state_dict().items() if "running" not in k and "batches" not in k}
    images = torch.randint(0, 256, (12, 3, 5, 5), dtype=torch.uint8)
    assert bn_recalibrate.recalibrate(m, images, batch_size=4) == 1
    with torch.no_grad():
        want = m.conv(images.float() / 255).mean((0, 2, 3))
    assert torch.allclose(m.bn.running_mean, want, atol=1e-5)
    assert not m.training and not m.bn.training
    assert all(torch.equal(m.state_dict()[k], v) for k, v in weights.items())
