"""DINO-MM's input, augmentations, networks, objective and pretraining module.

DINO (Caron et al., 2021) on a 14-channel input: the 12 Sentinel-2 L2A bands (B01-B08, B8A, B09, B11, B12)
**then** Sentinel-1 VH, VV, all scaled to [0, 1] (per band mean +/- 2 std). A student ViT learns to match a
momentum teacher's centred, sharpened softmax over K prototypes across multi-crop views; the paper's
addition, :class:`RandomSensorDrop`, zeroes the SAR or the optical channels of a view so that the model sees
SAR-only, optical-only and SAR-optical views (Sec. 2.2.2).

Everything random inside a training step (crops, jitter, sensor drop) is drawn per sample from the step's
:class:`eobook.rng.Random` source and runs batched on the device of the batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import augment
from ...nn.vit import create_vit
from ...rng import Random, ViewRandom, as_random
from ...train import StepContext, ema_momentum, ema_update
from .config import DinoMMConfig

S2_CHANNELS = 12  #: B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12 (channels 0-11)
S1_CHANNELS = 2   #: VH, VV (channels 12, 13), the order of the authors' 14-band input
IN_CHANS = S2_CHANNELS + S1_CHANNELS
#: What RandomSensorDrop leaves of a view, by mode index (the paper's S / O / M of Table 1).
SENSOR_MODES = ("S1+S2", "S2", "S1")


# --------------------------------------------------------------------------------------------------
# Input: 12 S2 + 2 S1 channels in [0, 1]
# --------------------------------------------------------------------------------------------------
def stack_sensors(s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """Concatenate S2 and S1 into DINO-MM's 14-channel input: [B,12,H,W] + [B,2,H,W] -> [B,14,H,W].

    Args:
        s2: the 12 L2A bands, already clipped to mean +/- 2 std and scaled to [0, 1].
        s1: (VV, VH) in standardised dB (the readers' order). Clipping to +/- 2 std and scaling to [0, 1]
            is the authors' mean +/- 2 std normalisation of S1; the channels are reordered to (VH, VV).
    """
    if s2.ndim != 4 or s2.shape[1] != S2_CHANNELS:
        raise ValueError(f"s2: expected [B,{S2_CHANNELS},H,W], got {tuple(s2.shape)}")
    if s1.ndim != 4 or s1.shape[1] != S1_CHANNELS or s1.shape[2:] != s2.shape[2:]:
        raise ValueError(f"s1: expected [B,{S1_CHANNELS},{s2.shape[2]},{s2.shape[3]}], got {tuple(s1.shape)}")
    s1_unit = ((s1.flip(1) + 2.0) / 4.0).clamp(0.0, 1.0)  # (VV, VH) -> (VH, VV), z in [-2, 2] -> [0, 1]
    return torch.cat([s2, s1_unit], dim=1)


def sensor_mask(modes: torch.Tensor, s2_channels: int = S2_CHANNELS, s1_channels: int = S1_CHANNELS) -> torch.Tensor:
    """Per-sample channel mask [B,C] for ``SENSOR_MODES`` indices [B]: 0 keeps both, 1 zeroes S1, 2 zeroes S2."""
    keep = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], device=modes.device)[modes]  # [B,2] (S2, S1)
    return torch.cat([keep[:, :1].expand(-1, s2_channels), keep[:, 1:].expand(-1, s1_channels)], dim=1)


def select_sensors(x: torch.Tensor, sensors: str) -> torch.Tensor:
    """Keep only ``sensors`` ("S1", "S2" or "S1+S2") of [B,14,H,W]; the missing sensor is zeroed (Sec. 3.1)."""
    if sensors not in SENSOR_MODES:
        raise ValueError(f"sensors: expected one of {SENSOR_MODES}, got {sensors!r}")
    modes = torch.full((x.shape[0],), SENSOR_MODES.index(sensors), dtype=torch.long, device=x.device)
    return x * sensor_mask(modes)[:, :, None, None].to(x.dtype)


class RandomSensorDrop:
    """Zero all S1 or all S2 channels of a view with probability ``p``, each half of the time (Sec. 2.2.2).

    Net per view: ``1 - p`` both sensors, ``p/2`` optical only, ``p/2`` SAR only; never both dropped.
    Channels are S2 first, then S1 (``s2_channels + s1_channels``).

    Args:
        s2_channels, s1_channels: channel counts of the two sensors.
        p: probability that one sensor is dropped.
    """

    def __init__(self, s2_channels: int = S2_CHANNELS, s1_channels: int = S1_CHANNELS, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p}")
        self.s2_channels, self.s1_channels, self.p = s2_channels, s1_channels, p

    def sample_modes(self, n: int, rng: Random, p: float | None = None) -> torch.Tensor:
        """Indices into ``SENSOR_MODES`` for ``n`` views: [n] int64 (0 both, 1 S2 only, 2 S1 only);
        ``p`` overrides the drop probability."""
        u = rng.rand(n, 2)
        return (u[:, 0] < (self.p if p is None else p)).long() * (1 + (u[:, 1] < 0.5).long())

    def apply(self, x: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        """Zero the channels that ``modes`` [B] drops in ``x`` [B,C,H,W]."""
        mask = sensor_mask(modes.to(x.device), self.s2_channels, self.s1_channels)
        return x * mask[:, :, None, None].to(x.dtype)

    def __call__(self, x: torch.Tensor, rng: Random | torch.Generator | None = None) -> torch.Tensor:
        """[B,C,H,W] -> the same, one independent draw per sample from ``rng`` (see :func:`eobook.rng.as_random`)."""
        if x.ndim != 4 or x.shape[1] != self.s2_channels + self.s1_channels:
            raise ValueError(f"x: expected [B,C,H,W] with C={self.s2_channels + self.s1_channels}, got {tuple(x.shape)}")
        return self.apply(x, self.sample_modes(x.shape[0], as_random(rng)))


# --------------------------------------------------------------------------------------------------
# Multi-crop augmentation, batched (Caron et al. 2021, Sec. 3.1; the authors' settings in NOTES.md)
# --------------------------------------------------------------------------------------------------
class MultiCropAugmentation:
    """DINO's multi-crop views of 14-channel tensors, then RandomSensorDrop per view, all batched.

    2 global crops (``global_size`` px, area scale ``global_scale``) and ``n_local`` local crops
    (``local_size`` px, ``local_scale``), bicubic; per view: horizontal flip (p 0.5), brightness/contrast
    jitter 0.4 (p 0.8), grayscale (p 0.2), Gaussian blur sigma 0.1-2 (p 1.0 / 0.1 / 0.5 for global 1 /
    global 2 / local), solarize (p 0.2, global 2 only), RandomSensorDrop (p ``sensor_drop_p``).

    Call with [B,14,H,W] in [0, 1]; returns global views [2B,14,g,g] and local views [n_local*B,14,l,l],
    view-major (rows ``v*B:(v+1)*B`` are view ``v``), and the sensor modes of all views [(2+n_local)*B].
    """

    def __init__(self, global_size: int = 112, local_size: int = 48, n_local: int = 8,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 sensor_drop_p: float = 0.5, jitter: float = 0.4, p_jitter: float = 0.8, p_gray: float = 0.2,
                 blur_sigma: tuple[float, float] = (0.1, 2.0), p_blur: tuple[float, float, float] = (1.0, 0.1, 0.5),
                 p_solarize: float = 0.2):
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        self.global_scale, self.local_scale = global_scale, local_scale
        self.sensor_drop = RandomSensorDrop(p=sensor_drop_p)
        self.jitter, self.p_jitter, self.p_gray = jitter, p_jitter, p_gray
        self.blur_sigma, self.p_blur, self.p_solarize = blur_sigma, p_blur, p_solarize

    @property
    def n_crops(self) -> int:
        return 2 + self.n_local

    def views(self, x: torch.Tensor, n_views: int, size: int, scale: tuple[float, float], p_blur: torch.Tensor,
              p_solarize: torch.Tensor, rng: Random, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_views`` augmented views of every sample, view-major: [n_views*B,C,size,size] and modes.

        Draws are made per sample (rows of the batch, so DDP ranks keep theirs); the views of a sample are
        its columns. ``strength`` scales the probability of every photometric transform and of the drop.
        """
        n = n_views * x.shape[0]
        rows = ViewRandom(rng, x.shape[0], n_views)
        flip = augment.coin(0.5, n, rows)
        boxes = augment.crop_boxes(n, scale, rows)
        v = augment.resample_boxes(x.repeat(n_views, 1, 1, 1), boxes, size, flip).clamp(0.0, 1.0)
        v = augment.brightness_contrast(v, self.jitter, strength * self.p_jitter, rows)
        v = augment.random_grayscale(v, strength * self.p_gray, rows)
        v = augment.random_gaussian_blur(v, strength * p_blur, self.blur_sigma, rows)
        v = augment.random_solarize(v, strength * p_solarize, rows)
        modes = self.sensor_drop.sample_modes(n, rows, strength * self.sensor_drop.p)
        return self.sensor_drop.apply(v, modes), modes

    def __call__(self, x: torch.Tensor, rng: Random | torch.Generator | None = None, strength: float = 1.0):
        """``rng``: the step context during training, a generator or None (see :func:`eobook.rng.as_random`).
        ``strength`` in [0, 1] scales the probabilities of the photometric transforms and of RandomSensorDrop
        (1: the paper's; 0: crops and flips only)."""
        if x.ndim != 4 or x.shape[1] != IN_CHANS:
            raise ValueError(f"x: expected [B,{IN_CHANS},H,W], got {tuple(x.shape)}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength: expected a value in [0, 1], got {strength}")
        b, rng = x.shape[0], as_random(rng)
        per_global = lambda first, second: torch.tensor([first] * b + [second] * b)  # noqa: E731
        globals_, g_modes = self.views(x, 2, self.global_size, self.global_scale,
                                       per_global(self.p_blur[0], self.p_blur[1]),
                                       per_global(0.0, self.p_solarize), rng, strength)
        if self.n_local == 0:
            return globals_, x.new_zeros(0, IN_CHANS, self.local_size, self.local_size), g_modes
        locals_, l_modes = self.views(x, self.n_local, self.local_size, self.local_scale,
                                      torch.full((self.n_local * b,), self.p_blur[2]),
                                      torch.zeros(self.n_local * b), rng, strength)
        return globals_, locals_, torch.cat([g_modes, l_modes])


# --------------------------------------------------------------------------------------------------
# Networks: g = h o f (backbone f, projection head h)
# --------------------------------------------------------------------------------------------------
class DINOHead(nn.Module):
    """DINO projection head h: 3-layer MLP (GELU) -> bottleneck -> l2-norm -> weight-normalised linear to K.

    Args:
        in_dim: backbone width D.
        out_dim: number of prototypes K (65,536 in the paper).
        hidden_dim, bottleneck_dim: MLP width (2048) and bottleneck (256).
        n_layers: MLP layers (3).
        norm_last_layer: fix the weight-norm gain g to 1 (not trained), as DINO's ``norm_last_layer``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], bottleneck_dim))
        self.apply(self._init_weights)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0  # g [K,1]
        gain.data.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N,D] -> logits [N,K]."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DINONetwork(nn.Module):
    """Backbone + head; runs each crop resolution through the backbone once (DINO's MultiCropWrapper)."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        """Batches of views (one per resolution) -> logits [sum of batch sizes, K] in the same order."""
        return self.head(torch.cat([self.backbone(v) for v in views if v.shape[0]]))


def build_backbone(cfg: DinoMMConfig, drop_path_rate: float = 0.0) -> nn.Module:
    """The ViT f with ``in_chans=14`` (ViT-S/8 in ``full``), random weights."""
    return create_vit("small", in_chans=IN_CHANS, img_size=cfg.img_size, patch_size=cfg.patch_size,
                      depth=cfg.depth, embed_dim=cfg.embed_dim, num_heads=cfg.num_heads,
                      drop_path_rate=drop_path_rate)


# --------------------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------------------
class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened softmax and the student's softmax (DINO).

    For teacher views t (the 2 global crops) and student views s (all crops), s != t::

        P_t = softmax((g_t(x_t) - c) / tau_t),   P_s = softmax(g_s(x_s) / tau_s)
        L = mean over pairs and samples of  -sum_k P_t[k] log P_s[k]

    and the centre follows Eq. (1): c <- m c + (1 - m) mean_i g_t(x_i) (batch mean over all ranks under
    DDP). tau_t warms up linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_epochs`` epochs (per epoch, as in DINO).

    Also returned, as a collapse monitor: the entropy H(P_t) of the teacher's targets (log K = uniform
    collapse, 0 = one-hot) and the KL divergence KL(softmax(g_t / tau_t) || softmax(c / tau_t)) between the
    teacher's output and the centre (0 when every output equals the centre: collapse).
    """

    def __init__(self, out_dim: int, n_crops: int, warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.07,
                 warmup_teacher_temp_epochs: int = 30, n_epochs: int = 100, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        if n_crops < 2:
            raise ValueError(f"n_crops: expected at least the 2 global crops, got {n_crops}")
        self.n_crops, self.student_temp, self.center_momentum = n_crops, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        warmup_epochs = min(warmup_teacher_temp_epochs, n_epochs)
        self.teacher_temps = np.concatenate([np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs),
                                             np.full(n_epochs - warmup_epochs, teacher_temp)])

    def teacher_temp(self, epoch: int) -> float:
        return float(self.teacher_temps[min(epoch, len(self.teacher_temps) - 1)])

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """``student_out`` [n_crops*B,K] and ``teacher_out`` [2*B,K], view-major; returns loss and monitors."""
        if student_out.shape[0] % self.n_crops or teacher_out.shape[0] * self.n_crops != 2 * student_out.shape[0]:
            raise ValueError(f"student_out {tuple(student_out.shape)} and teacher_out {tuple(teacher_out.shape)}: "
                             f"expected [{self.n_crops}*B,K] and [2*B,K]")
        tau_t = self.teacher_temp(epoch)
        log_p_s = F.log_softmax(student_out.float() / self.student_temp, dim=-1).chunk(self.n_crops)
        teacher_out = teacher_out.detach().float()
        p_t = F.softmax((teacher_out - self.center) / tau_t, dim=-1)  # [2B,K]
        total, n_terms = 0.0, 0
        for t, q in enumerate(p_t.chunk(2)):
            for v, log_p in enumerate(log_p_s):
                if v != t:  # skip the same view
                    total = total + torch.sum(-q * log_p, dim=-1).mean()
                    n_terms += 1
        with torch.no_grad():
            entropy = -(p_t * torch.log(p_t.clamp_min(1e-30))).sum(-1).mean()
            log_p_raw = F.log_softmax(teacher_out / tau_t, dim=-1)
            kl_center = (log_p_raw.exp() * (log_p_raw - F.log_softmax(self.center / tau_t, dim=-1))).sum(-1).mean()
            self.update_center(teacher_out)
        return {"loss": total / n_terms, "teacher_temp": torch.tensor(tau_t), "teacher_entropy": entropy,
                "kl_to_center": kl_center}

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """Eq. (1), with the batch mean taken over every rank under DDP."""
        batch_sum = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_out.shape[0]), device=teacher_out.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_sum)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


# --------------------------------------------------------------------------------------------------
# The pretraining module (student, teacher, centre, augmentation) for eobook.train.fit
# --------------------------------------------------------------------------------------------------
class DINOMM(nn.Module):
    """DINO-MM pretraining: ``forward(batch, ctx)`` augments, runs student and teacher, returns the loss.

    The teacher (backbone + head) is an EMA of the student with stop-gradient and sees only the 2 global
    views; the centre lives in :class:`DINOLoss`. All of it is in one ``state_dict``.

    ``backbone(drop_path_rate) -> module`` builds f for student and teacher instead of :func:`build_backbone`:
    any module mapping 14-channel views [B,14,s,s] of every crop size to features [B, cfg.embed_dim] (chapter
    6's shared backbone). The teacher starts as a copy of the student either way.
    """

    def __init__(self, cfg: DinoMMConfig, backbone: Callable[[float], nn.Module] | None = None):
        super().__init__()
        self.cfg = cfg
        head = lambda: DINOHead(cfg.embed_dim, cfg.out_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim,  # noqa: E731
                                norm_last_layer=cfg.norm_last_layer)
        backbone = backbone or (lambda rate: build_backbone(cfg, rate))
        self.student = DINONetwork(backbone(cfg.drop_path_rate), head())
        self.teacher = DINONetwork(backbone(0.0), head())
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.augment = MultiCropAugmentation(cfg.global_crop_size, cfg.local_crop_size, cfg.n_local_crops,
                                             cfg.global_crop_scale, cfg.local_crop_scale, cfg.sensor_drop_p)
        self.loss = DINOLoss(cfg.out_dim, self.augment.n_crops, cfg.warmup_teacher_temp, cfg.teacher_temp,
                             cfg.warmup_teacher_temp_epochs, cfg.epochs, cfg.student_temp, cfg.center_momentum)

    def forward(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        x = stack_sensors(batch["s2"], batch["s1"])                # [B,14,H,W]
        global_views, local_views, _ = self.augment(x, ctx, self.augmentation_strength(ctx))  # [2B,14,g,g], [nB,14,l,l]
        with torch.no_grad():
            teacher_out = self.teacher(global_views)              # [2B,K]
        student_out = self.student(global_views, local_views)     # [(2+n)B,K]
        out = self.loss(student_out, teacher_out, ctx.epoch)
        out["teacher_momentum"] = self.teacher_momentum(ctx)
        return out

    def augmentation_strength(self, ctx: StepContext) -> float:
        """1 (the paper) unless ``cfg.augmentation_warmup_epochs`` > 0: then a linear ramp from 0 over those
        epochs, so that a small model first learns from crops alone before the views lose a sensor or
        their colours (see the ``small`` profile: with the paper's augmentations from step 0 it collapses)."""
        warmup_steps = self.cfg.augmentation_warmup_epochs * ctx.steps_per_epoch
        return 1.0 if warmup_steps <= 0 else min(1.0, ctx.step / warmup_steps)

    def teacher_momentum(self, ctx: StepContext) -> float:
        """m from 0.996 to 1 over training (cosine)."""
        return ema_momentum(self.cfg.teacher_momentum, ctx.step, ctx.total_steps)

    def on_after_backward(self, ctx: StepContext) -> None:
        """Freeze the head's last layer in the first epoch(s) (DINO's ``cancel_gradients_last_layer``)."""
        if ctx.epoch < self.cfg.freeze_last_layer_epochs:
            for p in self.student.head.last_layer.parameters():
                p.grad = None

    def on_step_end(self, ctx: StepContext) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s."""
        ema_update(self.teacher, self.student, self.teacher_momentum(ctx))


def model_meta(cfg: DinoMMConfig) -> dict[str, int]:
    """Model-shape fields that a checkpoint must share with this run."""
    return {"in_chans": IN_CHANS, "patch_size": cfg.patch_size, "embed_dim": cfg.embed_dim, "depth": cfg.depth,
            "num_heads": cfg.num_heads, "out_dim": cfg.out_dim, "head_hidden_dim": cfg.head_hidden_dim,
            "head_bottleneck_dim": cfg.head_bottleneck_dim, "n_local_crops": cfg.n_local_crops}
