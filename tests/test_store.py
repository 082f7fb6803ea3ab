import numpy as np
import pytest
import torch

from mmue.data.diskarray import DiskArray
from mmue.protect import ProtectionState


def test_diskarray_reads_and_writes_rows(tmp_path):
    a = DiskArray(tmp_path / "a.i8", (10, 3, 4, 4), "int8", create=True)
    assert a[:].abs().sum() == 0 and a[:].dtype == torch.int8 and len(a) == 10
    rows = torch.randint(-8, 9, (3, 3, 4, 4), dtype=torch.int8)
    idx = torch.tensor([7, 2, 5])
    a[idx] = rows
    assert torch.equal(a[idx], rows)
    assert torch.equal(a[2], rows[1]) and a[0].abs().sum() == 0
    assert tuple(a[2:6].shape) == (4, 3, 4, 4)
    b = DiskArray.open(tmp_path, a.meta())          # reopened from its description
    assert torch.equal(b[idx], rows)
    with pytest.raises(ValueError, match="expected"):
        DiskArray(tmp_path / "a.i8", (11, 3, 4, 4), "int8")


def test_state_checkpoint_round_trip_restores_the_checkpointed_noise(tmp_path):
    noise = ProtectionState.new_noise((6, 3, 4, 4), tmp_path)
    st = ProtectionState(noise, torch.tensor([[5, 6], [7, 8]] * 3), rounds_done=2)
    noise[1] = torch.full((3, 4, 4), 3, dtype=torch.int8)
    st.save(tmp_path)
    noise[1] = torch.full((3, 4, 4), -5, dtype=torch.int8)   # a half-done next round, then a crash
    back = ProtectionState.load(tmp_path)
    assert back.rounds_done == 2 and torch.equal(back.triggers, st.triggers)
    assert int(back.noise[1].max()) == 3                       # the working file was reset to the checkpoint
    assert isinstance(back.noise, DiskArray)
    mem = ProtectionState.load(tmp_path, in_memory=True)
    assert isinstance(mem.noise, torch.Tensor) and int(mem.noise[1].max()) == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_in_memory_state_saves_too(tmp_path):
    st = ProtectionState(torch.ones(2, 3, 2, 2, dtype=torch.int8), torch.zeros(2, 0, dtype=torch.long), 1)
    st.save(tmp_path)
    back = ProtectionState.load(tmp_path, in_memory=True)
    assert torch.equal(back.noise, st.noise) and back.triggers.shape == (2, 0)
    assert np.fromfile(tmp_path / "noise.ckpt.r1.i8", dtype=np.int8).sum() == 24


def test_a_checkpoint_is_whole_until_its_state_file_names_it(tmp_path):
    noise = ProtectionState.new_noise((2, 3, 2, 2), tmp_path)
    st = ProtectionState(noise, torch.tensor([[1], [2]]), rounds_done=1)
    st.save(tmp_path)
    # round 2 writes its noise and triggers, then dies before state.json: round 1 stays what loads
    noise[0] = torch.full((3, 2, 2), 7, dtype=torch.int8)
    st.triggers, st.rounds_done = torch.tensor([[3], [4]]), 2
    real = ProtectionState.save.__globals__["atomic_write_json"]
    ProtectionState.save.__globals__["atomic_write_json"] = lambda *a: (_ for _ in ()).throw(KeyboardInterrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            st.save(tmp_path)
    finally:
        ProtectionState.save.__globals__["atomic_write_json"] = real
    back = ProtectionState.load(tmp_path, in_memory=True)
    assert back.rounds_done == 1 and back.triggers.tolist() == [[1], [2]] and int(back.noise[0].max()) == 0
    st.save(tmp_path)                                                       # once named, the old files go
    assert sorted(p.name for p in tmp_path.glob("*.r*.*")) == ["noise.ckpt.r2.i8", "triggers.r2.safetensors"]
