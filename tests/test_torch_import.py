"""Importing torchvision ResNet-18 weights: our model must reproduce torchvision's eval-mode outputs.

Two independent references: a NumPy re-implementation of torchvision's ResNet-18 forward
(NCHW, torch weight layouts; always run), and the same network built by hand from
``torch.nn`` layers (needs torch; there is no torchvision CPU wheel here).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.pth_support import STAGES, random_state_dict
from unlearn_jax.interop import import_torchvision_resnet18, load_torch_state_dict
from unlearn_jax.models import get_model

def _np_conv(x, w, stride, pad):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  _, _, h, wd = x.shape
  _, _, kh, kw = w.shape
  ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
  out = 0.0
  for i in range(kh):
    for j in range(kw):
      patch = x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
      out = out + np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
  return out


def _np_bn(x, sd, name):
  g = lambda k: sd[f"{name}.{k}"].astype(np.float64)[None, :, None, None]
  return (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")


def _np_maxpool(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  h, w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
  return np.max([x[:, :, i:i + 2 * (h - 1) + 1:2, j:j + 2 * (w - 1) + 1:2] for i in range(3) for j in range(3)],
                axis=0)


def numpy_resnet18(sd, x_nchw):
  """torchvision resnet18 forward in eval mode, float64 NumPy."""
  sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  relu = lambda a: np.maximum(a, 0)
  x = relu(_np_bn(_np_conv(x_nchw.astype(np.float64), sd["conv1.weight"], 2, 3), sd, "bn1"))
  x = _np_maxpool(x)
  for s, (_, stride) in enumerate(STAGES):
    for b in range(2):
      p = f"layer{s + 1}.{b}"
      st = stride if b == 0 else 1
      y = relu(_np_bn(_np_conv(x, sd[f"{p}.conv1.weight"], st, 1), sd, f"{p}.bn1"))
      y = _np_bn(_np_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
      if f"{p}.downsample.0.weight" in sd:
        x = _np_bn(_np_conv(x, sd[f"{p}.downsample.0.weight"], st, 0), sd, f"{p}.downsample.1")
      x = relu(y + x)
  x = x.mean(axis=(2, 3))
  return x @ sd["fc.weight"].T + sd["fc.bias"]


def _ours(params, batch_stats, x_nchw):
  model = get_model("resnet18", 10)
  return np.asarray(model.apply({"params": params, "batch_stats": batch_stats},
                                np.transpose(x_nchw, (0, 2, 3, 1)).astype(np.float32), train=False))


def test_numpy_state_dict_matches_numpy_reference_forward():
  rng = np.random.default_rng(0)
  sd = random_state_dict(rng)
  params, batch_stats = import_torchvision_resnet18(sd)
  assert params["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 128)
  assert params["conv1"]["kernel"].shape == (7, 7, 3, 64) and params["fc"]["kernel"].shape == (512, 10)
  np.testing.assert_array_equal(params["fc"]["kernel"], sd["fc.weight"].T)
  np.testing.assert_array_equal(batch_stats["layer3_1"]["bn2"]["var"], sd["layer3.1.bn2.running_var"])
  np.testing.assert_array_equal(params["bn1"]["scale"], sd["bn1.weight"])
  x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
  ref = numpy_resnet18(sd, x)
  np.testing.assert_allclose(_ours(params, batch_stats, x), ref, rtol=1e-3, atol=1e-3)
  assert np.abs(ref).max() > 0.1  # a non-trivial output, so the comparison can fail


def test_bad_state_dicts_are_rejected_with_the_entry_named():
  sd = random_state_dict(np.random.default_rng(1))
  missing = {k: v for k, v in sd.items() if k != "layer4.1.conv2.weight"}
  with pytest.raises(ValueError, match="layer4_1/conv2/kernel"):
    import_torchvision_resnet18(missing)
  wrong = dict(sd, **{"layer1.0.conv1.weight": np.zeros((64, 64, 5, 5), np.float32)})
  with pytest.raises(ValueError, match="layer1_0/conv1/kernel: expected shape"):
    import_torchvision_resnet18(wrong)
  with pytest.raises(ValueError, match="unexpected"):
    import_torchvision_resnet18(dict(sd, **{"extra.weight": np.zeros((3,), np.float32)}))


def _torch_resnet18(torch, num_classes=10):
  nn = torch.nn

  class Block(nn.Module):
    def __init__(self, cin, c, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(c)
      self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(c)
      self.downsample = None
      if stride != 1 or cin != c:
        self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(64)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      cin = 64
      for s, (c, stride) in enumerate(STAGES):
        setattr(self, f"layer{s + 1}", nn.Sequential(Block(cin, c, stride), Block(c, c, 1)))
        cin = c
      self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
      x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
      for s in range(4):
        x = getattr(self, f"layer{s + 1}")(x)
      return self.fc(x.mean(dim=(2, 3)))

  return Net()


def test_torch_tensors_and_pth_file_match_torch_forward(tmp_path):
  torch = pytest.importorskip("torch", reason="PyTorch is an optional extra (pip install 'unlearn_jax[torch]')")
  torch.manual_seed(0)
  net = _torch_resnet18(torch)
  with torch.no_grad():  # non-trivial BN statistics and affine terms
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
  net.eval()
  x = torch.randn(2, 3, 32, 32)
  with torch.no_grad():
    ref = net(x).numpy()
  params, batch_stats = import_torchvision_resnet18(net.state_dict())
  np.testing.assert_allclose(_ours(params, batch_stats, x.numpy()), ref, rtol=1e-4, atol=1e-4)
  path = tmp_path / "resnet18.pth"
  torch.save(net.state_dict(), path)
  params2, _ = import_torchvision_resnet18(load_torch_state_dict(str(path)))
  np.testing.assert_array_equal(params2["layer3_0"]["conv1"]["kernel"],
                                params["layer3_0"]["conv1"]["kernel"])
