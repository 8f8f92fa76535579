"""Checkpoint pieces: optimizer state without pickles, RNG, atomic writes, rotation, sampler."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from osdhuman.training.checkpoint import (
    CheckpointError,
    capture_rng,
    find_latest,
    list_checkpoints,
    load_checkpoint_state,
    optimizer_state_from_files,
    optimizer_state_to_files,
    resolve_resume,
    restore_rng,
    rotate_checkpoints,
    save_checkpoint,
)
from osdhuman.training.sampler import ResumableBatchSampler


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))


def _steps(net, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(4, 6, generator=g)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_optimizer_state_round_trips_bit_exactly(tmp_path):
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01)
    _steps(net, opt, 3, seed=1)
    names = {id(p): n for n, p in net.named_parameters()}
    optimizer_state_to_files(opt, names, tmp_path / "opt")
    meta = json.loads((tmp_path / "opt.json").read_text())
    assert meta["param_groups"][0]["params"] == [n for n, _ in net.named_parameters()]
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))

    net2 = _net(seed=5)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.5)  # hyper-parameters come from the file
    optimizer_state_from_files(opt2, {id(p): n for n, p in net2.named_parameters()}, tmp_path / "opt")
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.99)
    _steps(net, opt, 2, seed=7)
    _steps(net2, opt2, 2, seed=7)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)

    other = torch.nn.Linear(6, 2)
    with pytest.raises(CheckpointError):
        optimizer_state_from_files(torch.optim.AdamW(other.parameters()),
                                   {id(p): "x." + n for n, p in other.named_parameters()}, tmp_path / "opt")


def test_rng_round_trip():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    tensors, js = capture_rng()
    json.dumps(js)  # JSON-serialisable
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(tensors, js)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def _save(root, step, net, opt, fail=False):
    def write_weights(d):
        d.mkdir(parents=True)
        (d / "w.txt").write_text("w")
        if fail:
            raise KeyboardInterrupt("killed while saving")

    names = {id(p): n for n, p in net.named_parameters()}
    return save_checkpoint(root, step, write_weights=write_weights, trainable=dict(net.named_parameters()),
                           optimizers={"generator": opt}, param_names=names, state={"position": step * 4})


def _three_checkpoints(tmp_path):
    """A net stepped once, saved at steps 2, 4 and 6: (net, optimizer, checkpoints root)."""
    net = _net()
    opt = torch.optim.AdamW(net.parameters())
    _steps(net, opt, 1, seed=0)
    root = tmp_path / "checkpoints"
    for s in (2, 4, 6):
        _save(root, s, net, opt)
    return net, opt, root


def test_atomic_save_latest_and_rotation(tmp_path):
    net, opt, root = _three_checkpoints(tmp_path)
    assert find_latest(root).name == "step-00000006"
    # a kill during the save of step 8 leaves only a temp folder, which is never "latest"
    with pytest.raises(KeyboardInterrupt):
        _save(root, 8, net, opt, fail=True)
    assert find_latest(root).name == "step-00000006"
    assert any(p.name.startswith(".tmp-step-00000008") for p in root.iterdir())
    # a step folder without COMPLETE (e.g. copied half-way by hand) is ignored too
    (root / "step-00000010").mkdir()
    (root / "step-00000010" / "state.json").write_text("{}")
    assert find_latest(root).name == "step-00000006"
    with pytest.raises(CheckpointError, match="not a complete training checkpoint"):
        resolve_resume(str(root / "step-00000010"), root)
    state, trainable, _ = load_checkpoint_state(find_latest(root))
    assert state["step"] == 6 and state["position"] == 24
    for n, p in net.named_parameters():
        assert torch.equal(trainable[n], p.detach())
    # rotation keeps the newest two complete checkpoints
    deleted = rotate_checkpoints(root, keep=2)
    assert [s for s, _ in list_checkpoints(root)] == [4, 6]
    assert {d.name for d in deleted} == {"step-00000002"}
    assert resolve_resume("latest", root).name == "step-00000006"
    assert resolve_resume(str(tmp_path), root).name == "step-00000006"  # the run folder works too


@pytest.mark.parametrize("world", [1, 2])
def test_sampler_resumes_anywhere_and_covers_each_epoch(world):
    n, bs = 7, 2
    streams = []
    for rank in range(world):
        it = iter(ResumableBatchSampler(n, bs, seed=3, position=0, rank=rank, world=world))
        streams.append([next(it) for _ in range(10)])
    flat = sorted((pos, idx) for s in streams for b in s for idx, pos in b)
    assert [pos for pos, _ in flat] == list(range(10 * bs * world))  # every position once
    for e in range(2):
        assert sorted(idx for pos, idx in flat if e * n <= pos < (e + 1) * n) == list(range(n))
    assert [idx for pos, idx in flat[:n]] != [idx for pos, idx in flat[n:2 * n]]  # reshuffled per epoch
    # restarting at a global position continues each rank's stream exactly
    k = 3
    for rank in range(world):
        it = iter(ResumableBatchSampler(n, bs, seed=3, position=k * bs * world, rank=rank, world=world))
        assert [next(it) for _ in range(10 - k)] == streams[rank][k:]


def _flip_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: only the checksum can tell


def test_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    from osdhuman.training.checkpoint import resolve_resume_verified

    net, opt, root = _three_checkpoints(tmp_path)
    complete = json.loads((root / "step-00000006" / "COMPLETE").read_text())
    assert "trainable.safetensors" in complete["files"] and len(complete["files"]["rng.safetensors"]["sha256"]) == 64
    _flip_byte(root / "step-00000006" / "trainable.safetensors")  # same-size corruption
    opt_json = root / "step-00000004" / "optimizer-generator.json"
    opt_json.write_text(opt_json.read_text()[:10])  # truncated
    chosen, skipped = resolve_resume_verified("latest", root)
    assert chosen.name == "step-00000002"
    assert [d.name for d, _ in skipped] == ["step-00000006", "step-00000004"]
    assert "corrupt:" in skipped[0][1] and "trainable.safetensors" in skipped[0][1] and "sha256" in skipped[0][1]
    assert "optimizer-generator.json" in skipped[1][1] and "bytes" in skipped[1][1]
    assert find_latest(root).name == "step-00000006"  # the unverified lookup would have taken the damaged one
    with pytest.raises(CheckpointError, match="corrupt: .*trainable.safetensors"):
        resolve_resume_verified(str(root / "step-00000006"), root)  # an explicit damaged checkpoint: an error
    (root / "step-00000002" / "rng.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        resolve_resume_verified("latest", root)
