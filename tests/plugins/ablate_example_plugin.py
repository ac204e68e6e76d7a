"""A plugin as a user writes one: a study, a model family, a task and a dataset, registered
through ablate's public API only (tests/test_plugins.py loads it every way a plugin is found)."""

import torch
import torch.nn.functional as F
from torch import nn

import ablate


@ablate.register_study("kernel", sizes="Kernel sizes of the tutorial net's convs, comma-separated.")
def kernel(sizes: str = "3,5") -> ablate.Study:
    values = [int(s) for s in sizes.split(",")]
    return ablate.Study("kernel", "The tutorial net's kernel size.",
                        variants={str(k): {"kernel_size": k} for k in values}, factors=("kernel_size",),
                        plot="sweep")


@ablate.register_model("widenet", (3, 32, 32), "one conv of `width` channels and a linear head")
def widenet(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(width * 16, num_classes))


ablate.register_task(ablate.Task("smooth-classify", lambda out, x, y: F.cross_entropy(out, y, label_smoothing=0.1),
                                 classifies=True))


def _noisy(x, generator):
    """The model sees the image with noise from the run's own seeded stream; it is scored
    against the clean image."""
    return x + 0.3 * torch.randn(x.shape, generator=generator, device=x.device)


ablate.register_task(ablate.Task("denoise", lambda out, x, y: F.mse_loss(out, x), metrics=(ablate.psnr,),
                                 inputs=_noisy))


@ablate.register_dataset("stripes", ["plain", "striped"], "generated 1x16x16 stripes, 400 images, two classes")
def stripes(folders):
    """Images and labels only: ablate holds out a test split (20 % of each class, seeded)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    images = torch.randint(0, 64, (400, 1, 16, 16), dtype=torch.uint8, generator=generator)
    images[labels == 1, :, ::2] += 128  # class 1: bright rows
    return images, labels


@ablate.register_executor("process-pool", "a concurrent.futures process pool of 2 processes on this machine")
def process_pool(options):
    """The pool's processes load the driver's plugins first, and send progress through a queue."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads forked
    with context.Manager() as manager, concurrent.futures.ProcessPoolExecutor(
            2, mp_context=context, initializer=ablate.load_plugins, initargs=(ablate.plugin_modules(),)) as pool:
        yield PoolExecutor(pool, manager.Queue())


class PoolExecutor:
    def __init__(self, pool, queue):
        self.pool, self.queue = pool, queue

    def map(self, work, packs, data, report):
        import concurrent.futures

        futures = {self.pool.submit(_in_a_process, work, pack, data, self.queue): pack for pack in packs}
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.05,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            while not self.queue.empty():
                report(self.queue.get())
            for future in done:
                yield futures[future], future.result()


def _in_a_process(work, pack, data, queue):
    import os

    where = f"pid {os.getpid()}"
    queue.put(ablate.started(pack, where))
    return work(pack, data, on_batch=ablate.batch_reporter(pack, queue.put, where))
