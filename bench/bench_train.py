"""Training step cost: why `train` runs on one intra-op thread, and what each model kind's default step costs.

    pytest bench/bench_train.py --benchmark-enable

Side by side in one run: one default DCGAN step on mnist5k-sized digits (batch 8, width 64, d = 32) with 1 and
with 2 torch threads, and one default step of every kind (1 thread, as `train` runs it). On the 2-core dev machine
with other jobs running, 2 threads made whole 5-epoch runs 2.7x slower than 1 (135 s vs 50 s): the ops of these
small batches are too small to split, and threads that wait for a busy core stall each other.
"""
import pytest
import torch

from egbas_fast import models, train


def _setup(kind, batch):
    torch.manual_seed(0)
    bundle = models.build(kind, (1, 28, 28))
    bundle.apply(models.init_weights)
    return bundle, train.optimizers_for(bundle), torch.rand(batch, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (batch,))


@pytest.mark.parametrize("threads", [1, 2])
def test_dcgan_step_threads(benchmark, threads):
    bundle, opts, x, _ = _setup("dcgan", train._BATCH["dcgan"])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        benchmark(train.step, bundle, opts, x)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind", models.KINDS)
def test_default_step_per_kind(benchmark, kind):
    bundle, opts, x, y = _setup(kind, train._BATCH[kind])
    with train._one_thread():
        benchmark(train.step, bundle, opts, x, y)
