"""The ``fast`` inference engine: the same AASIST numbers with less memory traffic.

What it changes, all exact up to float rounding:
- the sinc bank is a fixed convolution weight built once; its 70th filter is dropped because the
  3x3 max-pool that follows floors 70 filters to 23 groups of three and never reads it;
- eval-mode BatchNorm after ``conv1`` is folded into that convolution's weight and bias;
- max-pools become element-wise maxima of strided views (no index tensors), dead ``bn1`` work is
  never done;
- SELU, BatchNorm affine and residual adds run in place: on CPU every fresh full-size buffer costs
  a pass of page faults, which was most of the eager model's time;
- 2-D activations use channels-last on CPU (oneDNN convolves it about twice as fast) and for
  bfloat16 on CUDA (tensor-core kernels); float32 on CUDA stays NCHW, which measured faster there.
``torch.compile`` on top is optional (:func:`voxguard.inference.build_engine`): on a 2-core CPU it
measured no faster than this hand-fused form and costs ~16 s per batch shape at start-up.

With ``dtype=torch.bfloat16`` the residual encoder (almost all the FLOPs) runs in bfloat16 while the
sinc front end and the graph back end stay float32, which keeps scores close to float32.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aasist import AASIST, Residual_block


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with the BatchNorm in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _pool_time(x: Tensor) -> Tensor:
    """``max_pool2d(x, (1, 3))`` as the maximum of three strided views (layout-agnostic, no indices)."""
    end = (x.shape[-1] // 3) * 3
    out = torch.maximum(x[..., 0:end:3], x[..., 1:end:3])
    return torch.maximum(out, x[..., 2:end:3], out=out)


class _FastBlock(nn.Module):
    def __init__(self, block: Residual_block) -> None:
        super().__init__()
        self.conv1 = fold_batch_norm(block.conv1, block.bn2)
        self.conv2 = block.conv2
        self.conv_downsample = getattr(block, "conv_downsample", None)

    def forward(self, x: Tensor) -> Tensor:
        # In-place glue: each fresh full-size buffer costs a pass of page faults on CPU.
        out = self.conv2(F.selu(self.conv1(x), inplace=True))
        out.add_(x if self.conv_downsample is None else self.conv_downsample(x))
        return _pool_time(out)


class FastAASIST(nn.Module):
    """Inference-only AASIST built from a loaded eager model; same ``(hidden, logits)`` output."""

    def __init__(self, model: AASIST, dtype: torch.dtype = torch.float32, channels_last: bool = True) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        bank = model.conv_time.band_pass
        used = (bank.shape[0] // 3) * 3
        self.register_buffer("sinc", bank[:used].unsqueeze(1).clone(), persistent=False)
        bn = model.first_bn
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        self.register_buffer("front_scale", scale.clone(), persistent=False)
        self.register_buffer("front_shift", (bn.bias - bn.running_mean * scale).detach().clone(), False)
        self.blocks = nn.ModuleList(_FastBlock(seq[0]) for seq in model.encoder).to(dtype)
        self.back_end = model
        self.eval()

    def front_end(self, x: Tensor) -> Tensor:
        x = F.conv1d(x.unsqueeze(1), self.sinc).abs_()  # (B, 69, T)
        b, f, t = x.shape
        # 3x3 max-pool as two passes of element-wise maxima: over filter triplets, then over time.
        # (A strided amax over a 5-D view measured 6x slower on CPU.)
        groups = x.reshape(b, f // 3, 3, t)
        x = torch.maximum(groups[:, :, 0], groups[:, :, 1])
        x = _pool_time(torch.maximum(x, groups[:, :, 2], out=x))
        return F.selu(x.mul_(self.front_scale).add_(self.front_shift), inplace=True).unsqueeze(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e = self.front_end(x).to(self.dtype).contiguous(memory_format=self.memory_format)
        for block in self.blocks:
            e = block(e)
        return self.back_end.graph_back_end(e.float().contiguous())
