#!/usr/bin/env python3
"""PyTorch side of benchmarks/train_vs_pytorch: one-thread training throughput and inference
latency of LeNet-5 / LeNet-300-100 on Fashion-MNIST, same architecture, recipe and batch size as
slimnet's run. Prints one JSON object. Needs Debian's python3-torch (and libopenblas0-pthread)."""
import argparse, gzip, json, os, time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch
import torch.nn as nn


def load_idx(path, offset):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def model_for(name):
    if name == "lenet5":  # Caffe / Han et al. LeNet-5: no activation after the convolutions
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    if name == "lenet300":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                             nn.Linear(100, 10))
    raise SystemExit(f"unknown model {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="lenet5")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--samples", type=int, default=0, help="training samples (0 = the whole epoch)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    images = load_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28)
    labels = load_idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz"), 8)
    if a.samples > 0:
        images, labels = images[: a.samples], labels[: a.samples]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    model = model_for(a.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(x))
    model.train()
    start = time.perf_counter()
    for i in range(0, len(x), a.batch):
        idx = order[i : i + a.batch]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    train_seconds = time.perf_counter() - start

    model.eval()
    latency = {}
    with torch.no_grad():
        for batch, reps in ((1, 2000), (64, 200)):
            xb = x[:batch]
            for _ in range(10):
                model(xb)
            t = time.perf_counter()
            for _ in range(reps):
                model(xb)
            latency[batch] = (time.perf_counter() - t) / reps * 1e3
    from pytorch_dense_models import aten_capability, blas_report  # here: that module imports this one

    capability = aten_capability()
    print(f"# pytorch {torch.__version__}, {torch.get_num_threads()} thread(s), ATen CPU capability {capability}")
    for line in blas_report():
        print(line)
    print(json.dumps({"framework": f"pytorch {torch.__version__}", "model": a.model, "threads": torch.get_num_threads(),
                      "train_samples": len(x), "train_samples_per_s": len(x) / train_seconds,
                      "latency_b1_ms": latency[1], "latency_b64_ms": latency[64]}))


if __name__ == "__main__":
    main()
