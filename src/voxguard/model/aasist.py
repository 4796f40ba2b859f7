"""AASIST (Jung et al., ICASSP 2022), written from the paper with the official parameter names.

The forward follows the paper's figure: a fixed sinc filter bank front end, a residual
encoder over the (frequency, time) plane, one graph per axis (spectral and temporal), two
heterogeneous stacked graph-attention branches joined by a master node, and a max readout.
Parameter names and shapes match the official checkpoints so they load with ``strict=True``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SAMPLE_RATE, AasistConfig

SPECTRAL_NODES = 23


def sinc_filter_bank(n_filters: int, kernel_size: int, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Mel-spaced band-pass sinc filters, shape ``(n_filters, kernel_size | 1)``.

    The arithmetic order (sinc argument and sinc in float32, scaling and difference in float64,
    then a float32 Hamming window) reproduces the reference bank bit for bit; the order matters
    because the golden logits move by up to 3e-5 with a float64-only bank.
    """
    if kernel_size % 2 == 0:
        kernel_size += 1
    nyquist = sample_rate // 2
    freqs = nyquist * np.linspace(0.0, 1.0, 257)
    mel = 2595.0 * np.log10(1.0 + freqs / 700.0)
    edges_mel = np.linspace(mel.min(), mel.max(), n_filters + 1)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    half = (kernel_size - 1) / 2
    taps = torch.arange(-half, half + 1)  # float32, like the reference
    window = torch.from_numpy(np.hamming(kernel_size)).float()
    bank = torch.empty(n_filters, kernel_size)
    for i in range(n_filters):
        f_lo, f_hi = np.float64(edges_hz[i]), np.float64(edges_hz[i + 1])
        # numpy float64 scalars keep the scaling in float64; the sinc itself sees float32 arguments.
        high = (2 * f_hi / sample_rate) * np.sinc((2 * float(f_hi) * taps / sample_rate).numpy())
        low = (2 * f_lo / sample_rate) * np.sinc((2 * float(f_lo) * taps / sample_rate).numpy())
        bank[i] = window * torch.from_numpy(high - low).float()
    return bank


class CONV(nn.Module):
    """Fixed sinc filter bank applied as a 1-D convolution without padding (no learned weights)."""

    def __init__(self, out_channels: int, kernel_size: int, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.register_buffer("band_pass", sinc_filter_bank(out_channels, kernel_size, sample_rate), False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.band_pass.unsqueeze(1))


class Residual_block(nn.Module):
    """Two (2, 3) convolutions with a skip connection, then a (1, 3) max-pool over time.

    Blocks after the first own a ``bn1`` whose output the official forward discards (the
    convolution reads the raw input). It is kept so checkpoints load strictly, and skipped here
    because computing a value nobody reads changes nothing.
    """

    def __init__(self, nb_filts: tuple[int, int], first: bool = False) -> None:
        super().__init__()
        c_in, c_out = nb_filts
        if not first:
            self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=(2, 3), padding=(0, 1))
        if c_in != c_out:
            self.conv_downsample = nn.Conv2d(c_in, c_out, kernel_size=(1, 3), padding=(0, 1))
        self.mp = nn.MaxPool2d((1, 3))

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))
        identity = self.conv_downsample(x) if hasattr(self, "conv_downsample") else x
        return self.mp(out + identity)


def _node_pair_products(x: Tensor) -> Tensor:
    """Element-wise product of every node pair: ``(B, N, D) -> (B, N, N, D)``."""
    return x.unsqueeze(2) * x.unsqueeze(1)


def _batch_norm_nodes(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """BatchNorm1d over the feature axis of node tensors ``(B, N, D)``."""
    shape = x.shape
    return bn(x.reshape(-1, shape[-1])).reshape(shape)


class GraphAttentionLayer(nn.Module):
    """Homogeneous graph attention (one node type) with temperature-scaled softmax."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(torch.empty(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(p=0.2)
        self.temp = temperature
        nn.init.xavier_normal_(self.att_weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_drop(x)
        logits = torch.tanh(self.att_proj(_node_pair_products(x))) @ self.att_weight
        attention = torch.softmax(logits.squeeze(-1) / self.temp, dim=-1)
        x = self.proj_with_att(attention @ x) + self.proj_without_att(x)
        return F.selu(_batch_norm_nodes(self.bn, x))


class HtrgGraphAttentionLayer(nn.Module):
    """Heterogeneous graph attention over two node types plus a master node (the paper's HS-GAL).

    Attention logits use a separate weight vector per relation: type1-type1, type2-type2 and one
    shared by both cross-type directions. The master node attends over all nodes.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight22 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight12 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weightM = nn.Parameter(torch.empty(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(p=0.2)
        self.temp = temperature
        for weight in (self.att_weight11, self.att_weight22, self.att_weight12, self.att_weightM):
            nn.init.xavier_normal_(weight)

    def _attention(self, x: Tensor, n1: int) -> Tensor:
        hidden = torch.tanh(self.att_proj(_node_pair_products(x)))
        # One logit per node pair, with the weight vector of that pair's relation.
        same1 = (hidden[:, :n1, :n1] @ self.att_weight11).squeeze(-1)
        same2 = (hidden[:, n1:, n1:] @ self.att_weight22).squeeze(-1)
        cross12 = (hidden[:, :n1, n1:] @ self.att_weight12).squeeze(-1)
        cross21 = (hidden[:, n1:, :n1] @ self.att_weight12).squeeze(-1)
        logits = torch.cat([torch.cat([same1, cross12], dim=2), torch.cat([cross21, same2], dim=2)], dim=1)
        return torch.softmax(logits / self.temp, dim=-1)

    def _update_master(self, x: Tensor, master: Tensor) -> Tensor:
        logits = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # (B, N, 1)
        attention = torch.softmax(logits / self.temp, dim=1)
        pooled = attention.transpose(1, 2) @ x  # (B, 1, D)
        return self.proj_with_attM(pooled) + self.proj_without_attM(master)

    def forward(self, x1: Tensor, x2: Tensor, master: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n1 = x1.size(1)
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        x = self.input_drop(x)
        attention = self._attention(x, n1)
        master = self._update_master(x, master)
        x = self.proj_with_att(attention @ x) + self.proj_without_att(x)
        x = F.selu(_batch_norm_nodes(self.bn, x))
        return x[:, :n1], x[:, n1:], master


class GraphPool(nn.Module):
    """Keep the top ``max(int(N * ratio), 1)`` nodes by a learned sigmoid score, scaled by it."""

    def __init__(self, ratio: float, in_dim: int, p: float) -> None:
        super().__init__()
        self.k = ratio
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(p=p) if p > 0 else nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # (B, N, 1)
        keep = max(int(h.size(1) * self.k), 1)
        _, idx = torch.topk(scores, keep, dim=1)
        return torch.gather(h * scores, 1, idx.expand(-1, -1, h.size(2)))


class AASIST(nn.Module):
    """The AASIST network. ``forward`` returns ``(last_hidden, logits)``; logit 1 is bona fide."""

    def __init__(self, config: AasistConfig) -> None:
        super().__init__()
        self.config = config
        filts, gat_dims = config.filts, config.gat_dims
        pool, temps = config.pool_ratios, config.temperatures
        channels = filts[-1][-1]
        self.conv_time = CONV(filts[0], config.first_conv)
        self.first_bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(0.5)
        self.drop_way = nn.Dropout(0.2)
        self.encoder = nn.Sequential(
            nn.Sequential(Residual_block(filts[1], first=True)),
            nn.Sequential(Residual_block(filts[2])),
            nn.Sequential(Residual_block(filts[3])),
            nn.Sequential(Residual_block(filts[4])),
            nn.Sequential(Residual_block(filts[4])),
            nn.Sequential(Residual_block(filts[4])),
        )
        self.pos_S = nn.Parameter(torch.randn(1, SPECTRAL_NODES, channels))
        self.master1 = nn.Parameter(torch.randn(1, 1, gat_dims[0]))
        self.master2 = nn.Parameter(torch.randn(1, 1, gat_dims[0]))
        self.GAT_layer_S = GraphAttentionLayer(channels, gat_dims[0], temperature=temps[0])
        self.GAT_layer_T = GraphAttentionLayer(channels, gat_dims[0], temperature=temps[1])
        self.HtrgGAT_layer_ST11 = HtrgGraphAttentionLayer(gat_dims[0], gat_dims[1], temperature=temps[2])
        self.HtrgGAT_layer_ST12 = HtrgGraphAttentionLayer(gat_dims[1], gat_dims[1], temperature=temps[2])
        self.HtrgGAT_layer_ST21 = HtrgGraphAttentionLayer(gat_dims[0], gat_dims[1], temperature=temps[2])
        self.HtrgGAT_layer_ST22 = HtrgGraphAttentionLayer(gat_dims[1], gat_dims[1], temperature=temps[2])
        self.pool_S = GraphPool(pool[0], gat_dims[0], 0.3)
        self.pool_T = GraphPool(pool[1], gat_dims[0], 0.3)
        self.pool_hS1 = GraphPool(pool[2], gat_dims[1], 0.3)
        self.pool_hT1 = GraphPool(pool[2], gat_dims[1], 0.3)
        self.pool_hS2 = GraphPool(pool[2], gat_dims[1], 0.3)
        self.pool_hT2 = GraphPool(pool[2], gat_dims[1], 0.3)
        self.out_layer = nn.Linear(5 * gat_dims[1], 2)

    def front_end(self, x: Tensor) -> Tensor:
        """Waveform ``(B, T)`` -> spectro-temporal map ``(B, 1, F, T')`` for the encoder."""
        x = self.conv_time(x.unsqueeze(1)).unsqueeze(1)
        x = F.max_pool2d(x.abs(), (3, 3))
        return F.selu(self.first_bn(x))

    def graph_back_end(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output ``(B, C, F, T)`` -> ``(last_hidden, logits)``."""
        e_abs = e.abs()
        spectral = e_abs.amax(dim=3).transpose(1, 2) + self.pos_S
        temporal = e_abs.amax(dim=2).transpose(1, 2)
        out_S = self.pool_S(self.GAT_layer_S(spectral))
        out_T = self.pool_T(self.GAT_layer_T(temporal))

        branches = []
        for first, second, pool_S, pool_T, master in (
            (self.HtrgGAT_layer_ST11, self.HtrgGAT_layer_ST12, self.pool_hS1, self.pool_hT1, self.master1),
            (self.HtrgGAT_layer_ST21, self.HtrgGAT_layer_ST22, self.pool_hS2, self.pool_hT2, self.master2),
        ):
            t, s, m = first(out_T, out_S, master)
            t, s = pool_T(t), pool_S(s)
            t_aug, s_aug, m_aug = second(t, s, m)
            branches.append((self.drop_way(t + t_aug), self.drop_way(s + s_aug), self.drop_way(m + m_aug)))

        (t1, s1, m1), (t2, s2, m2) = branches
        t, s, m = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)
        hidden = torch.cat(
            [t.abs().amax(dim=1), t.mean(dim=1), s.abs().amax(dim=1), s.mean(dim=1), m.squeeze(1)], 1
        )
        return hidden, self.out_layer(self.drop(hidden))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.graph_back_end(self.encoder(self.front_end(x)))
