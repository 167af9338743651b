#!/usr/bin/env python3
"""PyTorch side of benchmarks/compressed_models (issue 15): one-thread inference latency of the DENSE
float LeNet-5 and LeNet-300-100 (the architectures of nn::models, Caffe-style LeNet-5 without an
activation after the convolutions) and of the BNN LeNet-5 style net of example 07 run as a dense
float network ("bnn-lenet5": conv 32 - pool - BN - sign - conv 64 - pool - BN - sign - fc 512 - BN -
sign - fc 10 - BN, evaluation mode) and of example 08's dense Bi-LSTM ("bilstm": 2 layers x 128 per
direction over 28 steps of 28 features, fc 10; benchmarks/compressed_recurrent's peer) and DeepSense at
HHAR's sizes ("deepsense": nn::models::deepsense, 20 intervals of 120 features; compressed_recurrent's
DeepSense row) at the given
batch sizes, what each compressed model is compared with in the "vs PyTorch dense" column.

Timing matches the C++ side: thread CPU time, `--rounds` rounds of at least `--min-sample` seconds
each, the median per call. The weights are PyTorch's random initialisation: a dense forward pass does
the same work whatever the values (the pruned models' zeros are multiplied like any other weight).

The caller runs this with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (this machine's environment
sets OPENBLAS_CORETYPE=Haswell, which holds OpenBLAS - and PyTorch's BLAS with it - to AVX2): the
script prints which BLAS library PyTorch loaded and which kernel (core) OpenBLAS chose.

Output, one line each:  "# <information>"  and  "latency <model> <batch> <seconds per call>".
Needs Debian's python3-torch (PyTorch 1.13); run with /usr/bin/python3.
"""
import argparse
import ctypes
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_lenet import model_for  # noqa: E402  (the same architectures as nn::models)


class Sign(torch.nn.Module):
    """BNN's deterministic sign activation: -1 below 0, +1 otherwise (slimnet's quant::sign_activation)."""

    def forward(self, x):
        return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def bnn_lenet5(c1=32, c2=64, f=512):
    """Example 07's BNN LeNet-5 style net as a dense float network (what PyTorch runs for a BNN)."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, c1, 5), nn.MaxPool2d(2), nn.BatchNorm2d(c1), Sign(),
                         nn.Conv2d(c1, c2, 5), nn.MaxPool2d(2), nn.BatchNorm2d(c2), Sign(), nn.Flatten(),
                         nn.Linear(c2 * 16, f), nn.BatchNorm1d(f), Sign(), nn.Linear(f, 10), nn.BatchNorm1d(10))


class BiLSTM(torch.nn.Module):
    """Example 08's sequential-MNIST classifier (the dense model of benchmarks/compressed_recurrent):
    Bidirectional(LSTM(28, hidden, layers)) over 28 steps of 28 features, each direction's final
    hidden state of the last layer (slimnet's last_step output), Linear(2 hidden, 10)."""

    def __init__(self, layers=2, hidden=128):
        super().__init__()
        self.lstm = torch.nn.LSTM(28, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(2 * hidden, 10)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.fc(torch.cat((h[-2], h[-1]), dim=1))


class DeepSense(torch.nn.Module):
    """nn::models::deepsense at HHAR's sizes (benchmarks/compressed_recurrent's DeepSense row), evaluation
    mode: per interval of 120 features, each sensor's 60 through conv1 64 @ 1x18 stride 6, conv2 and
    conv3 64 @ 1x3 (BN, ReLU after each), the two sensors stacked on the height axis (64, 2, 4), conv4
    2x8, conv5 2x6, conv6 2x4 with TensorFlow SAME padding (extra row / column last; BN, ReLU), 512
    features per interval; GRU(512, 120) and GRU(120, 120) over the 20 intervals, the mean over them,
    Linear(120, 6). Dropout is the identity in evaluation mode and left out."""

    def __init__(self, intervals=20, per_sensor=60, sensors=2, c=64, hidden=120, classes=6):
        super().__init__()
        nn = torch.nn
        self.per_sensor = per_sensor
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(1, c, (1, 18), stride=(1, 6)), nn.BatchNorm2d(c), nn.ReLU(),
                          nn.Conv2d(c, c, (1, 3)), nn.BatchNorm2d(c), nn.ReLU(),
                          nn.Conv2d(c, c, (1, 3)), nn.BatchNorm2d(c), nn.ReLU()) for _ in range(sensors))
        merge = []
        for kw in (8, 6, 4):  # SAME: (left, right, top, bottom) = ((kw-1)//2, kw//2, 0, 1) for kh = 2
            merge += [nn.ZeroPad2d(((kw - 1) // 2, kw // 2, 0, 1)), nn.Conv2d(c, c, (2, kw)), nn.BatchNorm2d(c), nn.ReLU()]
        self.merge = nn.Sequential(*merge, nn.Flatten())
        positions = (per_sensor - 18) // 6 + 1 - 4
        self.gru1 = nn.GRU(c * sensors * positions, hidden, batch_first=True)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        n, t, f = x.shape
        frames = x.reshape(n * t, 1, 1, f)
        per = [b(frames[..., k * self.per_sensor:(k + 1) * self.per_sensor]) for k, b in enumerate(self.branches)]
        z = self.merge(torch.cat(per, dim=2)).reshape(n, t, -1)
        z, _ = self.gru1(z)
        z, _ = self.gru2(z)
        return self.fc(z.mean(dim=1))


def dense_model(name):
    if name == "deepsense":
        return DeepSense()
    if name == "bnn-lenet5":
        return bnn_lenet5()
    if name == "bilstm":
        return BiLSTM()
    return model_for(name)


def dense_input(name, batch):
    """(N, 28, 28) sequences for the Bi-LSTM (step t is image row t), (N, 20, 120) intervals for DeepSense,
    (N, 1, 28, 28) images otherwise."""
    if name == "deepsense":
        return torch.rand(batch, 20, 120) * 2 - 1
    return torch.rand(batch, 28, 28) if name == "bilstm" else torch.rand(batch, 1, 28, 28)


def aten_capability():
    """The vector instruction set ATen's kernels run (ATEN_CPU_CAPABILITY caps it): PyTorch 1.13 has no
    getter, but torch.__config__.show() prints it ("CPU capability usage: AVX2")."""
    if hasattr(torch._C, "_get_cpu_capability"):
        return torch._C._get_cpu_capability()
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            return line.split(":", 1)[1].strip()
    return "unknown"


def blas_report():
    """The BLAS shared objects mapped into this process, and OpenBLAS's chosen core when reachable."""
    lines = []
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                base = os.path.basename(path)
                if any(k in base for k in ("blas", "mkl", "lapack", "dnnl")):
                    libs.add(path)
    except OSError as e:
        lines.append(f"# could not read /proc/self/maps: {e}")
    for path in sorted(libs):
        lines.append(f"# loaded: {path}")
    cores = set()
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
            core = lib.openblas_get_corename
            core.restype = ctypes.c_char_p
            config = lib.openblas_get_config
            config.restype = ctypes.c_char_p
            found = f"# OpenBLAS core chosen: {core().decode()} ({config().decode()})"
            if found not in cores:  # libblas, liblapack and libopenblas are one library
                cores.add(found)
                lines.append(f"{found} via {path}")
        except (OSError, AttributeError):
            continue
    if not any("OpenBLAS core" in line for line in lines):
        lines.append("# OpenBLAS core: openblas_get_corename not reachable in the loaded libraries")
    lines.append("# OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s" % (os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
                                                                os.environ.get("OPENBLAS_L2_SIZE", "(unset)")))
    return lines


def median_latency(fn, rounds, min_sample):
    fn()
    reps = 1
    while True:
        t0 = time.thread_time()
        for _ in range(reps):
            fn()
        s = time.thread_time() - t0
        if s >= min_sample:
            break
        reps = max(reps * 2, int(reps * min_sample / max(s, 1e-9) * 1.2))
    samples = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(reps):
            fn()
        samples.append((time.thread_time() - t0) / reps)
    return statistics.median(samples)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5,lenet300")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--min-sample", type=float, default=2e-3)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    capability = aten_capability()
    print(f"# pytorch {torch.__version__}, {torch.get_num_threads()} thread(s), ATen CPU capability {capability}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}")
    for name in a.models.split(","):
        model = dense_model(name).eval()
        for batch in (int(b) for b in a.batches.split(",")):
            x = dense_input(name, batch)
            with torch.no_grad():
                t = median_latency(lambda: model(x), a.rounds, a.min_sample)
            print(f"latency {name} {batch} {t:.6e}", flush=True)
    for line in blas_report():  # after the runs: the BLAS library is loaded lazily
        print(line)


if __name__ == "__main__":
    main()
