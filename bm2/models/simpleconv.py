"""SimpleConv: the convolutional brain encoder of the brainmagick paper (spatial attention + dilated conv stack)."""

from __future__ import annotations

import torch
from torch import nn

from .common import ChannelDropout, ChannelMerger, SubjectLayers


def _left_pad(x: torch.Tensor, left: int) -> torch.Tensor:
    """Pad ``x[B, C, T]`` with ``left`` zeros at the start of time (causal padding); no-op when ``left`` is 0."""
    return torch.nn.functional.pad(x, (left, 0)) if left else x


class ConvBlock(nn.Module):
    """Kernel-k dilated conv -> BatchNorm -> GELU (-> dropout), residual when input and output shapes match.

    ``causal=True`` pads ``dilation * (k - 1)`` zeros on the left only, so output sample t sees inputs <= t.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int,
                 batch_norm: bool = True, dropout: float = 0.0, causal: bool = False) -> None:
        super().__init__()
        # padding = dilation * (k - 1) / 2 keeps the time length unchanged (odd k only); causal: all on the left,
        # done in forward so that the conv (and the state_dict) is the same module either way.
        self.left_padding = dilation * (kernel_size - 1) if causal else 0
        padding = 0 if causal else dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding)
        self.norm: nn.Module = nn.BatchNorm1d(out_channels) if batch_norm else nn.Identity()
        self.activation = nn.GELU()
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.residual = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x[B, C_in, T]``."""
        y = self.dropout(self.activation(self.norm(self.conv(_left_pad(x, self.left_padding)))))
        return x + y if self.residual else y


class GLUBlock(nn.Module):
    """Kernel-k conv to twice the channels, then a GLU over channels back to the original width.

    ``causal=True`` pads ``k - 1`` zeros on the left only (see :class:`ConvBlock`).
    """

    def __init__(self, channels: int, kernel_size: int, causal: bool = False) -> None:
        super().__init__()
        self.left_padding = kernel_size - 1 if causal else 0
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=0 if causal else (kernel_size - 1) // 2)
        self.glu = nn.GLU(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated conv to ``x[B, C, T]``."""
        return self.glu(self.conv(_left_pad(x, self.left_padding)))


class SimpleConv(nn.Module):
    """Brain encoder: [channel dropout] -> spatial attention -> 1x1 conv -> subject layers -> dilated convs -> head.

    Maps ``brain[B, C, T]`` to ``[B, out_channels, T]`` (time length preserved). With ``merger=True`` any
    montage (any C, with a mask of present sensors) is accepted; with ``merger=False`` C must be ``in_channels``.

    Where the paper and the original brainmagick code differ, the defaults follow the original code, and a flag
    gives the other behaviour:

    - ``merger_margin`` (0.2): positions in [0, 1] are mapped to ``(p + margin) / (1 + 2 * margin)`` before
      the Fourier embedding, as in the original code (see :class:`~bm2.models.common.FourierEmb`).
    - ``merger_dropout_per_item`` (False): the spatial-attention dropout masks the sensors in a disc of radius
      ``merger_dropout`` around one random centre drawn per batch (original code); True draws one per item.
    - ``subject_layers_id`` (False): subject layers start random (original code); True starts them at the
      identity (bm2's small ``conf/model/simpleconv.yaml`` does so).

    ``causal=True`` makes output sample t depend only on input samples <= t: every kernel-k convolution of the
    stack pads ``dilation * (k - 1)`` zeros on the left instead of half on each side (same weights, same
    state_dict, same length), and every other layer is already per-sample in time (spatial attention, 1x1
    convs, subject layers, the 1x1 ConvTranspose1d head, BatchNorm and dropout in eval mode). Such a model can
    run on a stream in chunks with :func:`bm2.models.streaming.stream`, keeping ``receptive_field - 1`` past
    input samples. Default False: the paper's centred ("same") padding.
    """

    # Batch keys forward takes (see bm2.tasks.base.run_model), and the sizes the builder fills in from the data
    # beside the always-passed out_channels and n_subjects (see bm2.models.data_kwargs_for).
    inputs: tuple[str, ...] = ("brain", "subject_index", "positions", "mask")
    data_kwargs: tuple[str, ...] = ()
    per_sample = True  # [B, out_channels, T]: any task

    def __init__(
        self,
        out_channels: int,
        n_subjects: int,
        merger: bool = True,
        merger_channels: int = 270,
        merger_pos_dim: int = 2048,
        merger_dropout: float = 0.2,
        merger_per_subject: bool = False,
        merger_margin: float = 0.2,
        merger_dropout_per_item: bool = False,
        in_channels: int | None = None,
        channel_dropout: float = 0.0,
        initial_linear: bool = True,
        subject_layers: bool = True,
        subject_layers_id: bool = False,
        hidden: int = 320,
        depth: int = 10,
        kernel_size: int = 3,
        dilation_period: int | None = 5,
        glu_every: int = 2,
        conv_dropout: float = 0.0,
        batch_norm: bool = True,
        head_hidden: int | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if out_channels < 1 or n_subjects < 1 or hidden < 1 or merger_channels < 1:
            raise ValueError("out_channels, n_subjects, hidden and merger_channels must all be >= 1")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if kernel_size < 1 or (kernel_size % 2 == 0 and not causal):
            raise ValueError(f"kernel_size must be odd so that the time length is preserved, got {kernel_size}")
        if not merger and in_channels is None:
            raise ValueError("SimpleConv(merger=False) needs in_channels (the fixed number of input sensors)")
        self.out_channels = out_channels
        self.n_subjects = n_subjects
        self.in_channels = in_channels
        self.merger_channels = merger_channels
        self.causal = causal

        self.channel_dropout = ChannelDropout(channel_dropout) if channel_dropout > 0 else None
        self.merger: ChannelMerger | None = None
        self.input_projection: nn.Conv1d | None = None
        if merger:
            self.merger = ChannelMerger(merger_channels, merger_pos_dim, dropout=merger_dropout,
                                        per_subject=merger_per_subject, n_subjects=n_subjects,
                                        margin=merger_margin, dropout_per_item=merger_dropout_per_item)
        else:
            assert in_channels is not None
            # Fixed montage: a learned 1x1 conv plays the role of the spatial attention.
            self.input_projection = nn.Conv1d(in_channels, merger_channels, 1)
        self.initial_linear = nn.Conv1d(merger_channels, merger_channels, 1) if initial_linear else None
        self.subject_layers = (SubjectLayers(merger_channels, n_subjects, init_id=subject_layers_id)
                               if subject_layers else None)

        blocks: list[nn.Module] = []
        channels = merger_channels
        for k in range(depth):
            # Dilations 1, 2, 4, ... restarting every `dilation_period` blocks: a wide receptive field
            # without the dilation (and its border effects) growing without bound.
            dilation = 2 ** (k % dilation_period) if dilation_period else 1
            blocks.append(ConvBlock(channels, hidden, kernel_size, dilation, batch_norm, conv_dropout, causal))
            channels = hidden
            if glu_every and (k + 1) % glu_every == 0:  # after blocks 1, 3, 5, ... for glu_every=2
                blocks.append(GLUBlock(hidden, kernel_size, causal))
        self.encoder = nn.Sequential(*blocks)

        head_hidden = head_hidden if head_hidden is not None else 2 * hidden
        self.head = nn.Sequential(
            nn.Conv1d(hidden, head_hidden, 1),
            nn.GELU(),
            nn.ConvTranspose1d(head_hidden, out_channels, 1),
        )

    @property
    def receptive_field(self) -> int:
        """Input samples one output sample depends on: 1 + the sum of ``dilation * (k - 1)`` over the stack.

        Centred on the output sample when ``causal=False``; the current and ``receptive_field - 1`` past
        samples when ``causal=True``.
        """
        convs = [m.conv for m in self.encoder if isinstance(m, (ConvBlock, GLUBlock))]
        return 1 + sum(c.dilation[0] * (c.kernel_size[0] - 1) for c in convs)

    def forward(self, brain: torch.Tensor, subject_index: torch.Tensor, positions: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``brain[B, C, T]`` (with ``subject_index[B]``, ``positions[B, C, 2]``, ``mask[B, C]``).

        Returns ``[B, out_channels, T]``.
        """
        if brain.dim() != 3:
            raise ValueError(f"brain must be [B, C, T], got shape {tuple(brain.shape)}")
        B, C, T = brain.shape
        if mask is None:
            mask = torch.ones(B, C, dtype=torch.bool, device=brain.device)
        mask = mask.bool()
        if self.merger is not None:
            if positions is None:
                raise ValueError("SimpleConv with merger=True needs sensor positions [B, C, 2]")
            if self.channel_dropout is not None:
                # Dropping through the mask lets the attention softmax renormalise over the kept sensors.
                mask = self.channel_dropout.sample_keep(mask)
            x = self.merger(brain, positions, mask, subject_index)
        else:
            if C != self.in_channels:
                raise ValueError(
                    f"SimpleConv(merger=False) was built for in_channels={self.in_channels} sensors but got "
                    f"C={C}; use merger=True to accept variable montages"
                )
            # Missing sensors (possibly NaN) contribute nothing.
            x = torch.where(mask[..., None], brain, torch.zeros_like(brain))
            if self.channel_dropout is not None:
                x = self.channel_dropout(x, mask)
            assert self.input_projection is not None
            x = self.input_projection(x)
        if self.initial_linear is not None:
            x = self.initial_linear(x)
        if self.subject_layers is not None:
            x = self.subject_layers(x, subject_index)
        x = self.encoder(x)
        out = self.head(x)
        assert out.shape[-1] == T, "SimpleConv must preserve the time length"
        return out
