"""Times ADTRS the way the authors' PyTorch code computes it, on this machine's CPU.

The authors' repository is not available here (the code index holds only its
README), so this is a PyTorch model written from ../shared/docs/ADTRS_SPEC.md
with the authors' *computation pattern*: torchvision-style ResNet50 v1.5,
L2 pooling, the attention down-sampling block and the head, and

- inference: every forward call also runs the horizontally flipped crop
  (two network passes per crop, as the authors' `forward` does at test time);
- training: each step calls the model on `x` and on `flip(x)`, and each call
  runs its own flip inside: four network passes per step, then Adam.

It is a baseline for `benchmarks/throughput.py` (same crop, batches, thread
count and timing rules), not a port: the port lives in `keras_adtrs`.
Needs PyTorch (CPU build: `pip install torch --index-url
https://download.pytorch.org/whl/cpu`); no torchvision, no network.

    python benchmarks/authors_pattern_torch.py [--crop-size 224] [--batches 8 32] [--repeats 3]
"""

import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np


def build(torch, crop_size):
    nn, F = torch.nn, torch.nn.functional

    class Bottleneck(nn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride in the 3x3
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.down = None
            if stride != 1 or inplanes != planes * 4:
                self.down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes * 4))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return F.relu(out + (x if self.down is None else self.down(x)))

    def stage(inplanes, planes, blocks, stride):
        layers = [Bottleneck(inplanes, planes, stride)]
        layers += [Bottleneck(planes * 4, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    class L2Pooling(nn.Module):
        def __init__(self, channels):
            super().__init__()
            a = np.hanning(5)[1:-1]
            g = np.outer(a, a) / np.outer(a, a).sum()
            self.register_buffer("filter", torch.tensor(g, dtype=torch.float32)[None, None].repeat(channels, 1, 1, 1))
            self.channels = channels

        def forward(self, x):
            return torch.sqrt(F.conv2d(x * x, self.filter, padding=1, groups=self.channels) + 1e-12)

    class AttentionDownsample(nn.Module):
        def __init__(self, dim, grid, heads=16, key_dim=16, attn_ratio=4):
            super().__init__()
            self.heads, self.key_dim, self.d = heads, key_dim, key_dim * attn_ratio
            self.q_local = nn.Conv2d(dim, dim, 3, 2, 1, groups=dim)
            self.q = nn.Sequential(nn.Conv2d(dim, heads * key_dim, 1), nn.BatchNorm2d(heads * key_dim))
            self.k = nn.Sequential(nn.Conv2d(dim, heads * key_dim, 1), nn.BatchNorm2d(heads * key_dim))
            self.v = nn.Sequential(nn.Conv2d(dim, heads * self.d, 1), nn.BatchNorm2d(heads * self.d))
            self.v_local = nn.Sequential(nn.Conv2d(heads * self.d, heads * self.d, 3, 2, 1, groups=heads * self.d),
                                         nn.BatchNorm2d(heads * self.d))
            self.proj = nn.Sequential(nn.ReLU(), nn.Conv2d(heads * self.d, dim, 1), nn.BatchNorm2d(dim))
            q_grid = -(-grid // 2)
            points = [(r, c) for r in range(grid) for c in range(grid)]
            queries = [(2 * r, 2 * c) for r in range(q_grid) for c in range(q_grid)]
            offsets, ids = {}, []
            for qr, qc in queries:
                for kr, kc in points:
                    ids.append(offsets.setdefault((abs(qr - kr), abs(qc - kc)), len(offsets)))
            self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
            self.register_buffer("bias_idxs", torch.tensor(ids).view(len(queries), len(points)))

        def forward(self, x):
            b, _, h, w = x.shape
            q_in = self.q_local(x) + x[:, :, ::2, ::2]
            q = self.q(q_in)
            hq, wq = q.shape[2:]
            q = q.flatten(2).view(b, self.heads, self.key_dim, hq * wq).permute(0, 1, 3, 2)
            k = self.k(x).flatten(2).view(b, self.heads, self.key_dim, h * w)
            v = self.v(x)
            v_local = self.v_local(v)
            v = v.flatten(2).view(b, self.heads, self.d, h * w).permute(0, 1, 3, 2)
            attn = (q @ k) * self.key_dim ** -0.5 + self.attention_biases[:, self.bias_idxs]
            out = (attn.softmax(-1) @ v).transpose(2, 3).reshape(b, self.heads * self.d, hq, wq) + v_local
            return self.proj(out)

    class ADTRSAuthorsPattern(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            self.layer1, self.layer2 = stage(64, 64, 3, 1), stage(256, 128, 4, 2)
            self.layer3, self.layer4 = stage(512, 256, 6, 2), stage(1024, 512, 3, 2)
            self.l2pools = nn.ModuleList([L2Pooling(c) for c in (256, 512, 1024, 2048)])
            self.dropout = nn.Dropout(0.1)
            self.block = AttentionDownsample(3840, crop_size // 32)
            self.fc_block = nn.Linear(3840, 2048)
            self.fc = nn.Linear(4096, 1)

        def once(self, x):
            l1 = self.layer1(self.stem(x))
            l2 = self.layer2(l1)
            l3 = self.layer3(l2)
            l4 = self.layer4(l3)
            levels = []
            for feature, pool, window in zip((l1, l2, l3, l4), self.l2pools, (8, 4, 2, 1)):
                feature = pool(F.normalize(feature, dim=1))
                levels.append(F.avg_pool2d(self.dropout(feature), window) if window > 1 else self.dropout(feature))
            block = self.block(torch.cat(levels, 1))
            head = self.fc_block(block.mean((2, 3)))
            # AvgPool2d(4) on the 7x7 map: the top-left 4x4 window.
            score = self.fc(torch.cat([head, l4[:, :, :4, :4].mean((2, 3))], 1))
            return score[:, 0], block, l4

        def forward(self, x):
            # The authors' forward: the crop and its mirror image, every call (also at test time).
            out = self.once(x)
            with torch.no_grad():
                flipped = self.once(torch.flip(x, dims=[3]))
            return out, flipped

    return ADTRSAuthorsPattern()


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(mode, batch, crop_size, warmup, timed, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(torch, crop_size)
    x = torch.rand(batch, 3, crop_size, crop_size)
    y = torch.rand(batch) * 100
    if mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-5, weight_decay=5e-4)
        l1 = torch.nn.functional.l1_loss

        def step():
            (q, block, l4), (qf_inner, block_fi, l4_fi) = model(x)
            (qf, block_f, l4_f), (q_inner, block_i, l4_i) = model(torch.flip(x, dims=[3]))
            loss = (l1(q, y) + l1(qf, y) + l1(block, block_f.detach()) + l1(l4, l4_f.detach())
                    + l1(block_f, block_fi) + l1(l4_f, l4_fi))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times), peak_mib()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="processes per row; the table shows medians")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--modes", nargs="+", default=["inference", "training"])
    parser.add_argument("--row", nargs=2, help=argparse.SUPPRESS)  # internal: one measurement in this process
    args = parser.parse_args(argv)
    if args.row:
        mode, batch = args.row[0], int(args.row[1])
        steps = (2, 5) if mode == "inference" else (1, 3)
        rate, peak = run(mode, batch, args.crop_size, *steps, args.threads)
        print(f"ROW {rate:.4f} {peak:.0f}")
        return 0
    import subprocess

    import torch

    print(f"PyTorch {torch.__version__}, {args.threads} threads, crop {args.crop_size}, medians of {args.repeats} processes")
    print("authors' pattern: inference = 2 passes per crop, training = 4 passes per step + Adam")
    print()
    print(f"{'mode':<10} {'batch':>5} {'crops/s':>9} {'runs':<24} {'peak MiB':>9}")
    for mode in args.modes:
        for batch in args.batches:
            rates, peaks = [], []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, __file__, "--row", mode, str(batch), "--crop-size",
                                      str(args.crop_size), "--threads", str(args.threads)],
                                     capture_output=True, text=True, check=True).stdout
                rate, peak = out.split("ROW ")[1].split()
                rates.append(float(rate))
                peaks.append(float(peak))
            runs = " ".join(f"{r:.2f}" for r in rates)
            print(f"{mode:<10} {batch:>5} {statistics.median(rates):>9.2f} {runs:<24} {max(peaks):>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
