import torch

from divekit.data.loader import TensorLoader


def test_batches_cover_every_example_once_per_epoch():
    x = torch.arange(103)
    loader = TensorLoader(x, batch_size=10, shuffle=True, seed=3)
    seen = torch.cat([b[0] for b in loader])
    assert len(loader) == 11
    assert sorted(seen.tolist()) == list(range(103))


def test_order_depends_only_on_seed_and_epoch():
    x = torch.arange(50)
    a, b = TensorLoader(x, batch_size=7, shuffle=True, seed=1), TensorLoader(x, batch_size=7, shuffle=True, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    assert torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in b]))
    b.set_epoch(3)
    assert not torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in b]))


def test_ranks_shard_each_global_batch():
    x = torch.arange(64)
    single = [b[0] for b in TensorLoader(x, batch_size=16, shuffle=True, seed=0)]
    ranks = [list(TensorLoader(x, batch_size=16, shuffle=True, seed=0, rank=r, world_size=2)) for r in range(2)]
    for k, batch in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][k][0], ranks[1][k][0]]), batch)


def test_iter_from_skips_batches():
    x = torch.arange(30)
    loader = TensorLoader(x, batch_size=4, shuffle=True, seed=5)
    full = [b[0] for b in loader]
    rest = [b[0] for b in loader.iter_from(3)]
    assert len(rest) == len(full) - 3
    assert all(torch.equal(a, b) for a, b in zip(full[3:], rest))


def test_drop_last_and_transform():
    loader = TensorLoader(torch.arange(10), batch_size=4, drop_last=True, transform=lambda b: (b[0] * 2,))
    assert [b[0].tolist() for b in loader] == [[0, 2, 4, 6], [8, 10, 12, 14]]
