"""Measure neural collapse in your own model with one call of nclab.track.track.

A small MLP is trained on synthetic clustered data (5 classes); the metrics of its penultimate
features are measured before and after training.  The tracker finds the features by itself (the
input of the last nn.Linear) and takes that layer's weight and bias as the classifier.  Runs in a
few seconds on a CPU:

    python docs/tutorials/measure_your_model.py
"""

# expect: K = 5 classes, N = 1000 samples, d = 32
# expect: ^nc1 +[0-9.e-]+ +[0-9.e-]+$
# expect: ^nc4 +[0-9.e-]+ +0$

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nclab.track import track

torch.manual_seed(0)
K, n, d_in = 5, 200, 20                                  # classes, samples per class, input size
centers = 3.0 * torch.randn(K, d_in)
labels = torch.arange(K * n) % K
inputs = centers[labels] + torch.randn(K * n, d_in)
loader = DataLoader(TensorDataset(inputs, labels), batch_size=100, shuffle=True)

model = nn.Sequential(
    nn.Linear(d_in, 64), nn.ReLU(),
    nn.Linear(64, 32), nn.ReLU(),                        # penultimate features: d = 32
    nn.Linear(32, K),                                    # the classifier W (K x d) and bias b
)

before = track(model, loader, nc4=True)                  # one call: hook, one pass (+1 for nc4)

optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
for epoch in range(60):
    for x, y in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

after = track(model, loader, nc4=True)

print(f"K = {after.num_classes} classes, N = {after.num_samples} samples, d = {after.dim}")
print(f"{'metric':<20} {'random init':>12} {'trained':>12}")
for name, value in after.as_dict().items():
    print(f"{name:<20} {before.as_dict()[name]:>12.4g} {value:>12.4g}")
assert after.nc1 < before.nc1                            # training collapses the classes
