"""The linearity study done the PyTorch tutorial's way, as a student's notebook would: a
per-sample Dataset (PIL image, ToTensor, Normalize), a DataLoader with 2 workers, the usual
loop. Its whole process is what

    ablate linearity --dataset synthetic --epochs 2 --limit-train 10000 --limit-test 1000

is compared with (issue 14: ablate must take at most 0.4x its wall time). Same data (ablate's
synthetic set), same three models, same optimiser (SGD, lr 0.02, momentum 0.9) and batch size.

    .venv/bin/python benchmarks/tutorial_way.py

Prints each variant's test accuracy per epoch and the wall time from the first line of this
file (imports included) to the end; time the process from outside for the interpreter's start.
"""

import time

START = time.perf_counter()

import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

from ablate.config import RunConfig  # noqa: E402
from ablate.data.datasets import load_dataset  # noqa: E402
from ablate.study.planning import resolve  # noqa: E402
from ablate.training.train import build_model  # noqa: E402

VARIANTS = {  # ablate's linearity study on its default model, the tutorial net (`ablate list studies`)
    "relu": {"activation": "relu", "fc1_features": 120},
    "linear": {"activation": "none", "fc1_features": 120},
    "linear-wide": {"activation": "none", "fc1_features": 240},
}
EPOCHS, BATCH_SIZE, WORKERS = 2, 128, 2


class Images(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: an HxWxC uint8 array made a PIL image,
    then the transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.images = x.permute(0, 2, 3, 1).numpy()
        self.labels = y.tolist()
        self.transform = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def evaluate(model, loader) -> tuple[float, float]:
    model.eval()
    loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in loader:
            outputs = model(images)
            loss += torch.nn.functional.cross_entropy(outputs, labels, reduction="sum").item()
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += len(labels)
    return loss / seen, correct / seen


def main() -> None:
    data = load_dataset("synthetic", limit_train=10_000, limit_test=1_000)
    trainloader = torch.utils.data.DataLoader(Images(data.train_x, data.train_y), batch_size=BATCH_SIZE,
                                              shuffle=True, num_workers=WORKERS)
    testloader = torch.utils.data.DataLoader(Images(data.test_x, data.test_y), batch_size=BATCH_SIZE,
                                             shuffle=False, num_workers=WORKERS)
    for name, fields in VARIANTS.items():
        torch.manual_seed(0)
        config = resolve(RunConfig(dataset="synthetic", epochs=EPOCHS).with_fields(**fields))
        model = build_model(config, 3, 10, 32)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        criterion = torch.nn.CrossEntropyLoss()
        for epoch in range(1, EPOCHS + 1):
            model.train()
            running = 0.0
            for images, labels in trainloader:
                optimizer.zero_grad()
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                running += loss.item()
            test_loss, test_accuracy = evaluate(model, testloader)
            print(f"{name:12s} epoch {epoch}: train loss {running / len(trainloader):.4f}, "
                  f"test loss {test_loss:.4f}, test accuracy {100 * test_accuracy:.2f} %", flush=True)
    print(f"wall time: {time.perf_counter() - START:.1f} s (from the first line, imports included)")


if __name__ == "__main__":  # the DataLoader's workers import this file again where they spawn
    main()
