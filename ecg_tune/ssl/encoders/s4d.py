"""S4D encoder (Gu et al. 2022, "On the parameterization and initialization of diagonal state space
models") in plain PyTorch, and the sequence encoder of CPC-S4 (`method=cpc, encoder=s4d`, the ECG-CPC
configuration: d_model 512, state 8, 4 layers).

Layout: a local encoder of `local_layers` x [Conv1d, BN, ReLU] (as `cpc_fc`: one token per `stride`
samples) gives z (B, T', d_model); `layers` residual pre-norm S4D blocks and a final LayerNorm give the
context c (B, T', d_model). Pooled features: concat(mean, max, last) of c = 3 * d_model.

One S4D layer, per channel h: the continuous system x' = A x + B u, y = 2 Re(C x) + D u with diagonal
complex A (N/2 modes, the other half are conjugates), B = 1, discretised with zero-order hold and step
dt. Its output is the convolution y = K * u + D u with kernel K[l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n
* exp(dt A_n l)): a Vandermonde product, computed here in real arithmetic (cos/sin of the phases) so that
autocast and torch.compile never see complex tensors. The convolution runs as an FFT of length 2T
(linear, not circular). Kernel and FFT run in float32 even under bf16 autocast (torch.fft has no bf16).

`mode`: `causal` (each output sees only the past: CPC, which needs this) or `bidirectional` (a second
kernel runs over the reversed sequence and adds the strictly-future part, as S4's bidirectional option;
for classification). A bidirectional encoder is not a sequence encoder (`is_sequence` False), so CPC
refuses it instead of letting the context see what it must predict.

Initialisation: A = -1/2 + i * imag with imag = pi n (S4D-Lin) or N/pi (N/(2n+1) - 1) (S4D-Inv);
log dt uniform in [log dt_min, log dt_max]; C complex normal. A and dt get no weight decay
(`no_weight_decay`), as in S4's optimiser set-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.cpc import conv_bn_relu
from ecg_tune.ssl.encoders.lstm import check_positive, concat_pool_time

MODES = ("causal", "bidirectional")
INITS = ("lin", "inv")


@dataclass
class S4DParams:
    d_model: int = 512  # ECG-CPC
    d_state: int = 8  # N: N/2 complex modes per channel (ECG-CPC's state 8)
    layers: int = 4
    local_layers: int = 4  # [Conv1d, BN, ReLU] layers before the S4D blocks (cpc_fc's local encoder)
    stride: int = 1  # first local conv has kernel = stride = this: one token per `stride` samples
    mode: str = "causal"  # causal (CPC) | bidirectional (classification, contrastive methods)
    init: str = "lin"  # S4D-Lin | S4D-Inv imaginary parts
    dt_min: float = 0.001
    dt_max: float = 0.1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive(d_model=self.d_model, layers=self.layers, local_layers=self.local_layers, stride=self.stride)
        if self.d_state < 2 or self.d_state % 2:
            raise ConfigError("encoder.d_state", f"must be an even number >= 2, got {self.d_state}")
        if self.mode not in MODES:
            raise ConfigError("encoder.mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.init not in INITS:
            raise ConfigError("encoder.init", f"must be one of {', '.join(INITS)}, got {self.init!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError("encoder.dt_min", f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("encoder.dropout", f"must be in [0, 1), got {self.dropout}")


class S4DKernel(nn.Module):
    """Convolution kernels (directions, H, L) of H independent diagonal state-space systems."""

    def __init__(self, channels: int, d_state: int, directions: int, init: str, dt_min: float, dt_max: float):
        super().__init__()
        modes = d_state // 2
        n = torch.arange(modes, dtype=torch.float32)
        imag = math.pi * n if init == "lin" else d_state / math.pi * (d_state / (2 * n + 1) - 1)
        log_dt = torch.rand(channels, 1) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_a_real = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.a_imag = nn.Parameter(imag.repeat(channels, 1))
        # Complex C as (real, imag) pairs; each part N(0, 1/2) so that |C|^2 has mean 1.
        self.c = nn.Parameter(torch.randn(directions, channels, modes, 2) * math.sqrt(0.5))

    def no_weight_decay(self) -> set[str]:
        return {"log_dt", "log_a_real", "a_imag"}

    def forward(self, length: int) -> torch.Tensor:
        dt = self.log_dt.float().exp()  # (H, 1)
        a_re, a_im = -self.log_a_real.float().exp(), self.a_imag.float()
        dta_re, dta_im = a_re * dt, a_im * dt  # (H, N/2)
        # B_bar = (exp(dt A) - 1) / A  (zero-order hold, B = 1), as (real, imag).
        e_re = dta_re.exp() * dta_im.cos() - 1.0
        e_im = dta_re.exp() * dta_im.sin()
        norm = a_re.square() + a_im.square()
        b_re = (e_re * a_re + e_im * a_im) / norm
        b_im = (e_im * a_re - e_re * a_im) / norm
        c = self.c.float()
        w_re = c[..., 0] * b_re - c[..., 1] * b_im  # (dirs, H, N/2)
        w_im = c[..., 0] * b_im + c[..., 1] * b_re
        steps = torch.arange(length, device=dt.device, dtype=torch.float32)
        decay = (dta_re[..., None] * steps).exp()  # (H, N/2, L): the Vandermonde powers |exp(dt A)|^l
        phase = dta_im[..., None] * steps
        return 2.0 * (
            torch.einsum("dhn,hnl->dhl", w_re, decay * phase.cos())
            - torch.einsum("dhn,hnl->dhl", w_im, decay * phase.sin())
        )


def causal_fft_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[t] = sum_{j<=t} kernel[j] u[t-j] along the last axis: (B, H, L) x (H, L), FFT of length 2L."""
    length = u.shape[-1]
    spectrum = torch.fft.rfft(u, n=2 * length) * torch.fft.rfft(kernel, n=2 * length)
    return torch.fft.irfft(spectrum, n=2 * length)[..., :length]


class S4DLayer(nn.Module):
    """(B, H, L) -> (B, H, L): S4D convolution + D skip, GELU, then a Linear to 2H with GLU (S4D's layer)."""

    def __init__(self, channels: int, d_state: int, bidirectional: bool, init: str, dt_min: float, dt_max: float,
                 dropout: float):
        super().__init__()
        self.bidirectional = bidirectional
        self.kernel = S4DKernel(channels, d_state, 2 if bidirectional else 1, init, dt_min, dt_max)
        self.d = nn.Parameter(torch.randn(channels))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Sequential(nn.Conv1d(channels, 2 * channels, 1), nn.GLU(dim=1))

    def convolve(self, u: torch.Tensor) -> torch.Tensor:
        """The state-space part alone, y = K * u (+ reversed part) + D u, in float32."""
        u = u.float()
        k = self.kernel(u.shape[-1])
        y = causal_fft_conv(u, k[0])
        if self.bidirectional:
            # Strictly future samples: y[t] += sum_{j>=1} k1[j-1] u[t+j] (the present is in the causal part).
            back = causal_fft_conv(u.flip(-1), k[1])
            y = y + nn.functional.pad(back[..., :-1], (1, 0)).flip(-1)
        return y + self.d.float()[:, None] * u

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.activation(self.convolve(u)))
        return self.output(y.to(u.dtype))


class S4DBlock(nn.Module):
    """Residual pre-norm block on (B, L, H)."""

    def __init__(self, channels: int, params: S4DParams):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.layer = S4DLayer(channels, params.d_state, params.mode == "bidirectional", params.init,
                              params.dt_min, params.dt_max, params.dropout)
        self.dropout = nn.Dropout(params.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.layer(self.norm(x).transpose(1, 2)).transpose(1, 2))


class S4DEncoder(Encoder):
    Params = S4DParams
    params: S4DParams
    is_sequence = True

    @classmethod
    def min_length(cls, params: S4DParams) -> int:
        return params.stride

    def __init__(self, params: S4DParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        # Only the causal form may serve CPC: a bidirectional context would see the steps it predicts.
        self.is_sequence = params.mode == "causal"  # type: ignore[misc]
        d = params.d_model
        widths = [n_leads] + [d] * params.local_layers
        kernels = [params.stride] + [1] * (params.local_layers - 1)
        self.local = nn.Sequential(
            *[conv_bn_relu(ni, nf, k, k) for ni, nf, k in zip(widths, widths[1:], kernels)]
        )
        self.blocks = nn.ModuleList(S4DBlock(d, params) for _ in range(params.layers))
        self.norm = nn.LayerNorm(d)
        self.local_dim = self.context_dim = d
        self.feature_dim = 3 * d

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(x).transpose(1, 2)

    def forward_context(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block(z)
        return self.norm(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return concat_pool_time(self.forward_context(self.forward_local(x)))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Local encoder, then each S4D block (the final norm with the last)."""
        groups = [list(self.local.parameters())] + [list(b.parameters()) for b in self.blocks]
        groups[-1] = groups[-1] + list(self.norm.parameters())
        return groups
