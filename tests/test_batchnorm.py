"""mmue.models.batchnorm: BatchNorm statistics re-estimated on clean images, nothing else changed."""
import torch

from mmue.models import recalibrate_batchnorm


class Tower(torch.nn.Module):
    def __init__(self, bn: bool = True):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.bn = torch.nn.BatchNorm2d(3, momentum=0.3) if bn else torch.nn.Identity()

    def encode_image(self, x):
        return self.bn(self.conv(x))


def test_statistics_come_from_the_clean_images_and_the_weights_stay():
    torch.manual_seed(0)
    m = Tower()
    m.bn.running_mean.fill_(100.0)          # statistics of some other (noisy) data
    weights = {k: v.clone() for k, v in m.state_dict().items() if "running" not in k and "batches" not in k}
    images = torch.randint(0, 256, (12, 3, 5, 5), dtype=torch.uint8)
    assert recalibrate_batchnorm(m, images, batch_size=4) == 1
    with torch.no_grad():
        want = m.conv(images.float() / 255).mean((0, 2, 3))
    # the mean over all 12 images, not a momentum-weighted one over the last batches
    assert torch.allclose(m.bn.running_mean, want, atol=1e-5)
    assert not m.training and not m.bn.training
    assert m.bn.momentum == 0.3               # put back: training on afterwards behaves as before
    assert all(torch.equal(m.state_dict()[k], v) for k, v in weights.items())


def test_a_model_without_batchnorm_is_left_as_it_is():
    torch.manual_seed(0)
    m = Tower(bn=False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert recalibrate_batchnorm(m, torch.zeros(2, 3, 5, 5, dtype=torch.uint8)) == 0
    assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())
