import logging

import pytest
import torch

from mmue.data import write_synth

logging.getLogger().addFilter(lambda r: "No pretrained weights loaded" not in r.getMessage())


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A small built-in dataset: 96 train / 48 test images, 5 captions each."""
    out = tmp_path_factory.mktemp("synth")
    write_synth(out, n_train=96, n_test=48, progress=False)
    return out


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory):
    """32 train / 16 test images: for end-to-end runs that only need a few batches."""
    out = tmp_path_factory.mktemp("small")
    write_synth(out, n_train=32, n_test=16, progress=False)
    return out


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
