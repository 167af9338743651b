#!/usr/bin/python3
"""PyTorch side of the LSTM/GRU throughput benchmark (run by lstm_throughput, or by hand):

  OPENBLAS_NUM_THREADS=1 /usr/bin/python3 lstm_throughput.py --cell lstm --batch 64 --steps 28 \
      --input 28 --hidden 128 --seconds 1

Times one nn.LSTM / nn.GRU layer (batch_first, float32, one thread) on full-length sequences:
inference (forward under no_grad) and a training step (forward, sum of outputs weighted by a
fixed random tensor, backward into the parameters; the input needs no gradient). Prints one JSON
line with the median wall-clock and process-CPU milliseconds per batch of each."""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402


def timed(fn, seconds, min_reps=5):
    """Median wall-clock and process-CPU milliseconds per call."""
    fn()  # warm-up: allocations, first-call dispatch
    fn()
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < min_reps or time.perf_counter() - start < seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3, len(wall)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--input", type=int, default=28)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    module = (torch.nn.LSTM if a.cell == "lstm" else torch.nn.GRU)(a.input, a.hidden, batch_first=True)
    x = torch.randn(a.batch, a.steps, a.input)
    r = torch.randn(a.batch, a.steps, a.hidden)

    def infer():
        with torch.no_grad():
            module(x)

    def train():
        module.zero_grad(set_to_none=False)
        out, _ = module(x)
        (out * r).sum().backward()

    infer_ms, infer_cpu_ms, infer_reps = timed(infer, a.seconds)
    train_ms, train_cpu_ms, train_reps = timed(train, a.seconds)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "infer_ms": infer_ms,
                      "infer_cpu_ms": infer_cpu_ms, "train_ms": train_ms, "train_cpu_ms": train_cpu_ms,
                      "infer_reps": infer_reps, "train_reps": train_reps}))


if __name__ == "__main__":
    main()
