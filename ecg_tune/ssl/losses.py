"""Pure loss functions of the self-supervised methods (no parameters, no state).

Each is tested one to one against a loop/numpy implementation in tests/ssl/test_losses.py. Losses
are computed in float32 even under bf16/fp16 autocast (half-precision inputs are upcast and autocast
is switched off around the similarity products): softmax over thousands of candidates, the
1/temperature scaling, CPC's unnormalised dot products and Sinkhorn's exponentials lose too much
precision in half precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from ecg_tune.ssl.distributed import all_reduce_max, all_reduce_sum, gather_with_grad, rank, world_size


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _no_autocast(t: torch.Tensor) -> torch.autocast:
    """Products inside run in the dtype of their (upcast) inputs, not autocast's half precision."""
    return torch.autocast(t.device.type, enabled=False)


# ---------------------------------------------------------------------------------------------- SimCLR


def nt_xent_logits(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather_distributed: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of NT-Xent (SimCLR) for two views (B, D) of the same B samples.

    Anchors are this rank's 2B embeddings [z1; z2]; candidates are the 2N embeddings of the global batch
    [all z1; all z2] (N = world size x B, gathered with gradients). Similarities are cosine / temperature.
    The anchor's own entry is set to -inf, so the denominator holds the positive and the 2N-2 negatives
    and nothing else (the reference subtracts e instead of exp(1/temperature) there: paper notes 8.3).

    Returns:
        logits (2B, 2N) float32 and targets (2B,) int64: the candidate index of each anchor's positive.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"nt_xent expects two (B, D) tensors of equal shape, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    z1 = F.normalize(_at_least_float32(z1), dim=1)
    z2 = F.normalize(_at_least_float32(z2), dim=1)
    b = z1.shape[0]
    if gather_distributed:
        n, offset = world_size() * b, rank() * b
        c1, c2 = gather_with_grad(z1), gather_with_grad(z2)
    else:
        n, offset = b, 0
        c1, c2 = z1, z2
    anchors = torch.cat([z1, z2])
    with _no_autocast(anchors):
        logits = anchors @ torch.cat([c1, c2]).T / temperature
    local = torch.arange(b, device=z1.device) + offset
    self_index = torch.cat([local, local + n])
    targets = torch.cat([local + n, local])
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * b, device=z1.device), self_index] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    return logits, targets


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather_distributed: bool = True
) -> torch.Tensor:
    """NT-Xent loss, mean over this rank's 2B anchors (the global mean once DDP averages ranks)."""
    logits, targets = nt_xent_logits(z1, z2, temperature, gather_distributed)
    return F.cross_entropy(logits, targets)


# ------------------------------------------------------------------------------------------------ BYOL


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 2 - 2 cos(p, z): normalised MSE between prediction and target projection.

    `z` should come from the target network (no gradient). The reference logs -2 mean cos instead,
    which differs by the constant 2 per direction and has the same gradients.
    """
    cos = F.cosine_similarity(_at_least_float32(p), _at_least_float32(z), dim=-1)
    return (2 - 2 * cos).mean()


# ------------------------------------------------------------------------------------------------ SwAV


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, gather_distributed: bool = True
) -> torch.Tensor:
    """Soft codes from prototype scores (B, K) by Sinkhorn-Knopp, SwAV convention.

    Q = exp(scores / epsilon), seen as a (K, B_total) transport plan with total mass 1; each iteration
    first gives every prototype mass 1/K, then every sample mass 1/B_total. The result is scaled by
    B_total and transposed, so each returned row (sample) sums to 1 and, as iterations grow, each column
    (prototype) sums to B_total/K over the global batch. Sums over the batch are all-reduced across
    processes, so the codes equal those of one process holding the whole batch.
    """
    scores = _at_least_float32(scores)
    gather = gather_distributed
    reduce_sum = all_reduce_sum if gather else (lambda t: t)
    # Subtracting the global maximum changes nothing after normalisation and keeps exp() finite.
    top = all_reduce_max(scores.max()) if gather else scores.max()
    q = torch.exp((scores - top) / epsilon).T  # (K, B)
    n_prototypes = q.shape[0]
    n_samples = q.shape[1] * (world_size() if gather else 1)
    tiny = torch.finfo(q.dtype).tiny  # an underflowed prototype row stays 0 instead of becoming NaN
    q /= reduce_sum(q.sum()).clamp_min(tiny)
    for _ in range(iterations):
        q /= reduce_sum(q.sum(dim=1, keepdim=True)).clamp_min(tiny)
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True).clamp_min(tiny)
        q /= n_samples
    q *= n_samples
    return q.T


def swav_loss(
    scores: Sequence[torch.Tensor], codes: Mapping[int, torch.Tensor], temperature: float = 0.1
) -> torch.Tensor:
    """Swapped prediction loss.

    Args:
        scores: per view, prototype scores (B, K) (cosine similarities of normalised embeddings and
            prototypes).
        codes: view index -> its Sinkhorn codes (B, K) (no gradient).
        temperature: softmax temperature of the predictions.

    Each assigned view's codes are predicted from every OTHER view: the cross-entropy is averaged over
    those n_views - 1 views (the reference divides the sum by n_views although it has n_views - 1
    terms: paper notes 8.5), and over the batch; the result is averaged over the assigned views.
    """
    n_views = len(scores)
    if n_views < 2 or not codes:
        raise ValueError("swav_loss needs at least two views and one assigned view")
    log_p = [F.log_softmax(_at_least_float32(s) / temperature, dim=1) for s in scores]
    total = torch.zeros((), device=scores[0].device)
    for view, q in codes.items():
        terms = [-(q * log_p[v]).sum(dim=1).mean() for v in range(n_views) if v != view]
        total = total + torch.stack(terms).mean()
    return total / len(codes)


# ------------------------------------------------------------------------------------------------- CPC


def cpc_negative_indices(
    batch_size: int,
    n_steps: int,
    offset: int,
    n_negatives: int,
    mode: str,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Random negatives for every anchor (b, t), t = 0 .. n_steps - offset - 1.

    mode "same_sequence": time steps drawn uniformly with replacement from the n_steps - 1 steps of the
    same sequence other than the positive's step t + offset; returns (None, neg_time).
    mode "batch": a uniformly drawn OTHER sequence of the batch and any of its steps; returns
    (neg_batch, neg_time). Both index tensors have shape (B, n_steps - offset, n_negatives).
    """
    n_anchors = n_steps - offset
    if n_anchors < 1:
        raise ValueError(
            f"CPC needs more than {offset} encoder steps to predict offset {offset}, got {n_steps}"
        )
    shape = (batch_size, n_anchors, n_negatives)
    if mode == "same_sequence":
        if n_steps < 2:
            raise ValueError("same-sequence negatives need at least two time steps")
        r = torch.randint(0, n_steps - 1, shape, device=device, generator=generator)
        positive = torch.arange(offset, n_steps, device=device).view(1, -1, 1)
        return None, r + (r >= positive).long()  # skip the positive's own step
    if mode == "batch":
        if batch_size < 2:
            raise ValueError("batch negatives need a batch of at least two sequences")
        r = torch.randint(0, batch_size - 1, shape, device=device, generator=generator)
        own = torch.arange(batch_size, device=device).view(-1, 1, 1)
        neg_batch = r + (r >= own).long()  # skip the anchor's own sequence
        neg_time = torch.randint(0, n_steps, shape, device=device, generator=generator)
        return neg_batch, neg_time
    raise ValueError(f"unknown CPC negatives mode {mode!r}; use 'same_sequence' or 'batch'")


def cpc_infonce(
    pred: torch.Tensor,
    z: torch.Tensor,
    offset: int,
    neg_time: torch.Tensor,
    neg_batch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of CPC for one prediction offset.

    Args:
        pred: (B, T, D) predictions of future encoder outputs made at each step (projected context).
        z: (B, T, D) encoder outputs.
        offset: k; the prediction at step t is scored against z[:, t + k] (t < T - k).
        neg_time, neg_batch: negative indices (B, T - k, n) from `cpc_negative_indices`; neg_batch None
            means negatives come from the anchor's own sequence.

    Scores are plain dot products (no temperature, no normalisation), the positive at index 0.
    Returns:
        (loss, accuracy): cross-entropy MEAN over batch and anchor steps (the reference sums over steps,
        so its logged loss is ~T - k times larger: paper notes 8.11), and the fraction of anchors whose
        positive scores strictly above every negative.
    """
    pred, z = _at_least_float32(pred), _at_least_float32(z)
    t = z.shape[1]
    anchors = pred[:, : t - offset]
    with _no_autocast(z):
        positive = (anchors * z[:, offset:]).sum(-1, keepdim=True)  # (B, T-k, 1)
        if neg_batch is None:
            # All scores against the own sequence in one bmm, then pick the sampled steps: far less
            # memory than materialising (B, T-k, n, D) negatives.
            negatives = torch.bmm(anchors, z.transpose(1, 2)).gather(2, neg_time)
        else:
            negatives = torch.einsum("btd,btnd->btn", anchors, z[neg_batch, neg_time])
    logits = torch.cat([positive, negatives], dim=-1)
    flat = logits.reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat, torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device))
    with torch.no_grad():
        accuracy = (flat[:, 0] > flat[:, 1:].max(dim=1).values).float().mean()
    return loss, accuracy
