"""A batch sampler whose order is a pure function of (seed, epoch), resumable mid-epoch; optionally
grouped by length (bucketing), so that a batch of variable-length sequences pads little.

Lightning calls `set_epoch` before each epoch; `iterations` records which epochs were really iterated
so that a test (and the task) can check that the epoch reached the sampler.
"""

import torch
from torch.utils.data import Sampler


class BatchLoader:
    """Yields `tensor[indices]` for each index batch of `sampler`: the job of a DataLoader without its
    per-batch machinery, which costs a measurable share of a step for models this small.
    Lightning finds `sampler.set_epoch` through the `sampler` attribute, as on a DataLoader."""

    batch_sampler = None  # Lightning inspects it on anything that has a `sampler`

    def __init__(self, tensor: torch.Tensor, sampler: "EpochBatchSampler"):
        self.tensor, self.sampler = tensor, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler:
            yield self.tensor[index]

    # Resumable to Lightning (its _Stateful protocol): where an interrupted epoch stands travels in the data
    # module's state_dict (the sampler's), so the loader itself has nothing to keep.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EpochBatchSampler(Sampler):
    """`lengths` (one per item) with `bucket_window` > 0: each epoch's shuffled order is cut into windows
    of `bucket_window` batches, each window sorted by length and cut into batches, and the batches of
    the epoch shuffled. Every item still comes once an epoch, and the order is still f(seed, epoch)."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        lengths=None,
        bucket_window: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if bucket_window < 0:
            raise ValueError(f"bucket_window must be >= 0 (0: no bucketing), got {bucket_window}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.lengths = None if lengths is None or not bucket_window else torch.as_tensor(lengths)
        self.bucket_window = bucket_window
        self.epoch = 0  # whose order is drawn
        self.loop_epoch = 0  # the fit loop's epoch (the same, but under hold_epoch)
        self.rank, self.world = 0, 1  # DDP: this process takes every world-th batch (set_shard)
        self.resume_at = (-1, 0)  # (epoch, batches already trained in it) from a mid-epoch checkpoint
        self.iterations: list[int] = []
        self.hold_epoch: int | None = None  # debug=overfit (callbacks.SameBatches): every epoch draws this one's order

    def set_shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.loop_epoch = epoch
        self.epoch = epoch if self.hold_epoch is None else self.hold_epoch

    def batch_indices(self, epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_items, generator=g) if self.shuffle else torch.arange(self.num_items)
        if self.lengths is not None:
            windows = order.split(self.batch_size * self.bucket_window)
            order = torch.cat([w[self.lengths[w].argsort(stable=True)] for w in windows])
        batches = list(order.split(self.batch_size))
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.lengths is not None and self.shuffle:  # no epoch runs from short to long
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        if self.world > 1:  # every rank takes as many batches: the order wraps round to fill the last turn
            per_rank = -(-len(batches) // self.world)
            batches = (batches + batches[: per_rank * self.world - len(batches)])[self.rank :: self.world]
        return batches

    def __len__(self) -> int:
        # Always the full epoch: Lightning counts batches already done when it resumes mid-epoch.
        full, rest = divmod(self.num_items, self.batch_size)
        total = full + (1 if rest and not self.drop_last else 0)
        return -(-total // self.world)

    def __iter__(self):
        self.iterations.append(self.epoch)
        epoch, done = self.resume_at
        self.resume_at = (-1, 0)
        # resumed inside the epoch it was saved in: on after its batches (an epoch's end resumes at the next)
        yield from self.batch_indices(self.epoch)[done if epoch == self.loop_epoch else 0 :]

    def state_dict(self, batches_done: int) -> dict:
        # the fit loop's epoch: under hold_epoch every epoch draws one order, and an epoch's end must not read
        # as the middle of the next
        return {"seed": self.seed, "epoch": self.loop_epoch, "batches_done": batches_done}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint data order has seed {state['seed']}, this run has seed {self.seed}")
        self.epoch = self.loop_epoch = state["epoch"]
        self.resume_at = (state["epoch"], state["batches_done"])


def shard(sampler: EpochBatchSampler, trainer) -> EpochBatchSampler:
    """Give a training sampler this process's share of each epoch under DDP (no-op on one process)."""
    if trainer is not None:
        sampler.set_shard(trainer.global_rank, trainer.world_size)
    return sampler


def totals_over_ranks(module, sums: torch.Tensor, count: int) -> tuple[torch.Tensor, float]:
    """An epoch's per-process sums (e.g. of training losses) and their count (batches, tokens), summed
    over all DDP processes in one reduction; unchanged on one process."""
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return sums, float(count)
    flat = torch.cat([sums.detach().double().reshape(-1), torch.tensor([float(count)], dtype=torch.float64)])
    flat = trainer.strategy.reduce(flat.to(module.device), reduce_op="sum").cpu()
    return flat[:-1].reshape(sums.shape), flat[-1].item()


def evaluates_batch(trainer, batch_idx: int) -> bool:
    """Whether this process evaluates validation batch `batch_idx`: under DDP every world_size-th, unless the
    loader is a torch DataLoader, which Lightning's distributed sampler has already split."""
    if trainer.world_size == 1 or isinstance(trainer.val_dataloaders, torch.utils.data.DataLoader):
        return True
    return batch_idx % trainer.world_size == trainer.global_rank


def parts_over_ranks(module, parts: list[tuple[int, object]]) -> list:
    """An evaluation's (batch index, part) pairs of every DDP process, gathered and put in batch order: the
    list one process evaluating every batch would have made; unchanged on one process. (The parts travel
    pickled between this run's own processes, never from a file.)"""
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return [part for _, part in parts]
    from lightning_utilities import apply_to_collection

    # on CPU first: a GPU tensor would come back on the GPU of the process that sent it
    parts = apply_to_collection(parts, torch.Tensor, lambda t: t.detach().cpu())
    gathered: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, parts)
    return [part for _, part in sorted((pair for rank in gathered for pair in rank), key=lambda pair: pair[0])]


def epoch_state_of_ranks(module, sums: torch.Tensor, count: float) -> dict:
    """A partial epoch's sums and count as a checkpoint keeps them (`task_epoch_state`): this process's and,
    under DDP, every process's (`by_rank`; gathered, since every process builds its checkpoint state
    together), so that on resume each process takes its own share back and the epoch's figures come out as
    if it had not stopped."""
    state = {"sums": sums.detach().cpu().clone(), "count": count}
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return state
    flat = torch.cat([sums.detach().double().reshape(-1), torch.tensor([float(count)], dtype=torch.float64)])
    gathered = trainer.strategy.all_gather(flat.to(module.device)).cpu()  # (processes, terms + 1)
    state["by_rank"] = [
        {"sums": row[:-1].to(sums.dtype).reshape(sums.shape), "count": type(count)(row[-1].item())} for row in gathered
    ]
    return state


def epoch_state_for_this_rank(module, checkpoint: dict) -> dict | None:
    """This process's share of a mid-epoch checkpoint's partial epoch sums (`task_epoch_state`): its own
    entry of `by_rank` when the checkpoint was written by as many DDP processes as now train; else the top
    level (rank 0's) for rank 0 and nothing for the others, which start from zero instead of counting rank
    0's share twice."""
    state = checkpoint.get("task_epoch_state")
    if not isinstance(state, dict):
        return None
    trainer = module._trainer
    rank, world = getattr(trainer, "global_rank", 0), getattr(trainer, "world_size", 1)
    by_rank = state.get("by_rank")
    if (
        isinstance(by_rank, list)
        and len(by_rank) == world
        and isinstance(by_rank[rank], dict)
        and isinstance(by_rank[rank].get("sums"), torch.Tensor)
    ):
        return by_rank[rank]
    return state if not rank else None


def at_limit(trainer, epoch: int) -> bool:
    """Whether `epoch` ends training by the Trainer's epoch or step limit (neither when both are -1)."""
    by_epochs = trainer.max_epochs not in (None, -1) and epoch + 1 >= trainer.max_epochs
    max_steps = getattr(trainer, "max_steps", -1)
    return by_epochs or (max_steps not in (None, -1) and trainer.global_step >= max_steps)


def batches_done(trainer) -> int:
    """Training batches finished in the current epoch (a checkpoint taken mid-epoch resumes after them)."""
    if trainer is None:
        return 0
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed
