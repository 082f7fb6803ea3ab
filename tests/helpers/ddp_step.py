"""One CLIP training step on a fixed batch, as a torchrun worker (2 ranks) or a single process.

Writes the loss and the weight gradients (rank 0) to the safetensors file given as argv[1].
"""
import sys

import torch
from safetensors.torch import save_file

from mmue import distributed
from mmue.models import create_model
from mmue.optim import clip_train_step

d, device = distributed.setup(torch.device("cpu"))
torch.manual_seed(0)
model = create_model("mmue-tiny-vit")
g = torch.Generator().manual_seed(1)
pixels = torch.rand(8, 3, 64, 64, generator=g)
ids = model.codec.rows([[int(t) for t in torch.randint(300, 5000, (6,), generator=g)] for _ in range(8)])
fwd = distributed.wrap_ddp(model, device)
opt = torch.optim.SGD(model.parameters(), lr=0.0)   # keep the gradients, change nothing
keep = d.shard(8)
loss = clip_train_step(fwd, opt, pixels[keep], ids[keep], device)
if d.is_main:
    grads = {n: p.grad.contiguous() for n, p in model.named_parameters() if p.grad is not None}
    save_file({"loss": torch.tensor([loss]), **{f"grad/{n}": v for n, v in grads.items()}}, sys.argv[1])
distributed.teardown()
