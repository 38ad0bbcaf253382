"""The data order is a pure function of (seed, epoch), it reaches the sampler, and resumes mid-epoch."""

import torch

from experiments.epoch_sampler import EpochBatchSampler
from experiments.families.ternary.data import TernaryOpsDataModule


def test_order_is_a_function_of_seed_and_epoch():
    a, b = EpochBatchSampler(100, 32, seed=3), EpochBatchSampler(100, 32, seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    first = torch.cat(list(a))
    a.set_epoch(3)
    assert not torch.equal(first, torch.cat(list(a))), "each epoch must draw a new order"
    assert sorted(first.tolist()) == list(range(100)), "an epoch visits every item once"
    c = EpochBatchSampler(100, 32, seed=4)
    c.set_epoch(2)
    assert not torch.equal(first, torch.cat(list(c)))


def test_mid_epoch_resume_skips_done_batches_only_in_that_epoch():
    s = EpochBatchSampler(100, 10, seed=0)
    s.load_state_dict({"seed": 0, "epoch": 4, "batches_done": 3})
    s.set_epoch(4)
    assert len(s) == 10  # Lightning needs the full epoch length
    resumed = list(s)
    assert len(resumed) == 7
    assert all(torch.equal(x, y) for x, y in zip(resumed, s.batch_indices(4)[3:]))
    s.set_epoch(5)
    assert len(list(s)) == 10


def test_the_epoch_reaches_the_sampler_in_a_real_fit(tmp_path):
    import lightning as L

    from experiments.families.ternary.task import TernaryVAETask
    from experiments.families.ternary.vae_v5_5 import DualVAE

    dm = TernaryOpsDataModule(batch_size=4096, seed=0)
    task = TernaryVAETask(DualVAE(), coverage_samples=100)
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    assert dm.train_sampler.iterations == [0, 1, 2]


def test_bucketed_order_is_a_permutation_of_every_example_in_every_epoch():
    from experiments.families.arc.data import ArcDataModule, tokens_of

    dm = ArcDataModule(format="champion", max_tasks=60, max_side=10, batch_size=4, bucket_window=4)
    n = len(dm.train_examples)
    lengths = torch.tensor([tokens_of(e, "champion") for e in dm.train_examples])
    spreads, unbucketed = [], []
    plain = EpochBatchSampler(n, 4, seed=0)
    for epoch in range(4):
        dm.train_sampler.set_epoch(epoch)
        batches = list(dm.train_sampler)
        order = torch.cat(batches)
        assert sorted(order.tolist()) == list(range(n)), f"epoch {epoch} is not a permutation of the examples"
        assert all(torch.equal(x, y) for x, y in zip(batches, dm.train_sampler.batch_indices(epoch))), "f(seed, epoch)"
        spreads.append(sum(int(lengths[b].max() - lengths[b].min()) for b in batches))
        unbucketed.append(sum(int(lengths[b].max() - lengths[b].min()) for b in plain.batch_indices(epoch)))
    assert sum(spreads) < 0.5 * sum(unbucketed), (spreads, unbucketed)
    dm.train_sampler.set_epoch(0)
    first = [b.tolist() for b in dm.train_sampler]
    dm.train_sampler.set_epoch(1)
    assert first != [b.tolist() for b in dm.train_sampler], "each epoch draws new batches"


def test_bucketed_order_shards_over_processes_and_resumes_mid_epoch():
    lengths = torch.randint(5, 500, (103,), generator=torch.Generator().manual_seed(0))
    whole = EpochBatchSampler(103, 8, seed=1, lengths=lengths, bucket_window=4)
    shards = [EpochBatchSampler(103, 8, seed=1, lengths=lengths, bucket_window=4) for _ in range(2)]
    for rank, s in enumerate(shards):
        s.set_shard(rank, 2)
    seen = torch.cat([b for s in shards for b in s.batch_indices(3)])
    assert set(seen.tolist()) == set(range(103)), "the two processes together see every example"
    whole.load_state_dict({"seed": 1, "epoch": 3, "batches_done": 5})
    whole.set_epoch(3)
    assert all(torch.equal(x, y) for x, y in zip(list(whole), whole.batch_indices(3)[5:]))
