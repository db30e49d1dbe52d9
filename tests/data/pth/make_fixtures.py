"""Writes the ``.pth`` fixtures of ``tests/test_pth_reader.py`` with PyTorch and torchvision.

Run from the repository root with torch and torchvision installed (CPU use only):

  python tests/data/pth/make_fixtures.py

It is not needed to run the tests: its outputs are committed. See README.md beside it.
"""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from tests.pth_support import random_state_dict  # noqa: E402  (the seeded torchvision-layout weights)

RESNET_SEED, INPUT_SEED, NUM_INPUTS = 19, 20, 3
MARKER = "pth_payload_marker.txt"


class Small(torch.nn.Module):
  """A few modules named as torchvision's ResNet names them (conv1, bn1, fc)."""

  def __init__(self):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(3, 4, 3, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(4)
    self.fc = torch.nn.Linear(4, 3)

  def forward(self, x):
    return self.fc(torch.relu(self.bn1(self.conv1(x))).mean(dim=(2, 3)))


class Payload:
  """Unpickling this object opens (creates) MARKER in the current directory."""

  def __reduce__(self):
    return (open, (MARKER, "w"))


def main() -> None:
  torch.manual_seed(0)
  small = Small()
  small.train()
  for _ in range(3):  # real running statistics and num_batches_tracked = 3 (int64)
    small(torch.randn(5, 3, 6, 6))
  sd = small.state_dict()
  assert isinstance(sd, collections.OrderedDict) and sd["bn1.num_batches_tracked"].dtype == torch.int64
  torch.save(sd, os.path.join(HERE, "small_state_dict.pth"))
  np.savez(os.path.join(HERE, "small_state_dict_expected.npz"), **{k: v.numpy() for k, v in sd.items()})

  torch.save(collections.OrderedDict([("fc.weight", torch.zeros(2, 2)), ("payload", Payload())]),
             os.path.join(HERE, "payload.pth"))

  net = torchvision.models.resnet18(num_classes=10)
  state = {k: torch.from_numpy(v) for k, v in random_state_dict(np.random.default_rng(RESNET_SEED)).items()}
  net.load_state_dict(state)
  net.eval()
  x = np.random.default_rng(INPUT_SEED).normal(size=(NUM_INPUTS, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    logits = net(torch.from_numpy(x)).numpy()
  np.savez(os.path.join(HERE, "resnet18_seeded_logits.npz"), logits=logits, resnet_seed=RESNET_SEED,
           input_seed=INPUT_SEED, torch_version=np.array(torch.__version__),
           torchvision_version=np.array(torchvision.__version__))
  print("wrote fixtures with torch", torch.__version__, "torchvision", torchvision.__version__)


if __name__ == "__main__":
  main()
