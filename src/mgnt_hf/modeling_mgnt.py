"""MGNT transformer: a bidirectional masked-token transformer with nested widths and a KV cache.

The model of width `w` is the leading slice of every shared tensor (DESIGN §1): embedding
columns `[:w]`, LayerNorms `[:w]`, the first `w / head_dim` heads, MLP `[:r*w, :w]` and
`[:w, :r*w]`, output-head columns `[:w]`. Slices of row-major weights are strided views that
`F.linear` hands to BLAS directly, so no width ever copies weights.

Sequence layout: position 0 is the class token, positions `1..N` the grid tokens in row-major
order of `config.token_grid`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_mgnt import MGNTConfig


class MGNTKVCache:
    """Keys and values of every layer for every sequence position, for one batch, at one width.

    Storage is allocated once for the full model, `[num_layers, batch, num_heads, 1 + N, head_dim]`;
    a cache built at width `w` uses the first `w / head_dim` heads of it. Each forward writes the
    keys/values of the positions it ran, so every position holds the K/V from the last forward
    that ran it: a position that leaves the active set keeps (commits) those K/V.

    Args:
        config: the transformer's config.
        batch_size: number of sequences (both guidance branches count).
        dtype, device: of the storage; use the dtype the transformer computes in.
    """

    def __init__(self, config: MGNTConfig, batch_size: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"cache batch_size must be a positive integer, got {batch_size!r}")
        shape = (config.num_hidden_layers, batch_size, config.num_attention_heads,
                 1 + config.num_grid_tokens, config.head_dim)
        # Uninitialised on purpose: only a full pass may build the cache, and it writes every position of the
        # heads it uses before any read (zero-filling cost a few ms per decode for nothing).
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        # Row index `[B, 1]` that pairs with `[B, A]` positions in the advanced-index writes of cached passes.
        self.batch_index = torch.arange(batch_size, device=device)[:, None]
        self.config = config
        self.width: int | None = None  # width of the last full pass; None until one has run

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the key and value storage (allocated once, at construction)."""
        return self.keys.nbytes + self.values.nbytes

    @property
    def is_built(self) -> bool:
        return self.width is not None

    def reset(self) -> None:
        """Mark the cache empty; the next full pass rebuilds it (storage is reused)."""
        self.width = None

    def layer(self, layer_index: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views `[B, heads(width), 1 + N, head_dim]` of one layer's keys and values, and `batch_index [B, 1]`."""
        heads = self.config.heads_at(width)
        return self.keys[layer_index, :, :heads], self.values[layer_index, :, :heads], self.batch_index


@dataclass
class MGNTTransformerOutput(ModelOutput):
    """
    Args:
        logits (`torch.FloatTensor` of shape `[B, N, codebook_size]`, or `[B, A, codebook_size]` when
            `active_positions` of `A` positions were given): scores over the codebook for every grid
            position that ran.
        cache (`MGNTKVCache`, *optional*): the cache passed in, now holding this forward's keys/values.
    """

    logits: torch.FloatTensor | None = None
    cache: MGNTKVCache | None = None


def _sliced_layer_norm(norm: nn.LayerNorm, hidden_states: torch.Tensor, width: int) -> torch.Tensor:
    return F.layer_norm(hidden_states, (width,), norm.weight[:width], norm.bias[:width], norm.eps)


def _sliced_linear(linear: nn.Linear, hidden_states: torch.Tensor, out_features: int, in_features: int):
    bias = None if linear.bias is None else linear.bias[:out_features]
    return F.linear(hidden_states, linear.weight[:out_features, :in_features], bias)


class MGNTEmbeddings(nn.Module):
    """Token, class and learned position embeddings (factorised into time and space for video grids)."""

    def __init__(self, config: MGNTConfig):
        super().__init__()
        self.token_grid = config.token_grid
        self.token_embeddings = nn.Embedding(config.codebook_size + 1, config.hidden_size)  # + mask id
        self.class_embeddings = nn.Embedding(config.num_classes + 1, config.hidden_size)  # + null class
        spatial_tokens = config.token_grid[-1] * config.token_grid[-2]
        self.position_embeddings = nn.Parameter(torch.zeros(spatial_tokens, config.hidden_size))
        if len(config.token_grid) == 3:
            self.temporal_position_embeddings = nn.Parameter(torch.zeros(config.token_grid[0], config.hidden_size))
        else:
            self.temporal_position_embeddings = None

    def grid_position_embeddings(self, width: int) -> torch.Tensor:
        """`[N, width]` position embedding of every grid token."""
        spatial = self.position_embeddings[:, :width]
        if self.temporal_position_embeddings is None:
            return spatial
        temporal = self.temporal_position_embeddings[:, :width]
        return (temporal[:, None, :] + spatial[None, :, :]).reshape(-1, width)

    def forward(self, grid_ids: torch.Tensor, class_labels: torch.Tensor, width: int,
                grid_positions: torch.Tensor | None = None, include_class_token: bool = True) -> torch.Tensor:
        """`grid_ids [B, M]` at `grid_positions [B, M]` (all N in order when None) -> `[B, (1 +) M, width]`."""
        tokens = F.embedding(grid_ids, self.token_embeddings.weight[:, :width])
        positions = self.grid_position_embeddings(width)
        if grid_positions is None:
            tokens = tokens + positions
        else:
            tokens = tokens + positions[grid_positions]
        if not include_class_token:
            return tokens
        class_token = F.embedding(class_labels, self.class_embeddings.weight[:, :width])[:, None, :]
        return torch.cat([class_token, tokens], dim=1)


class MGNTAttention(nn.Module):
    def __init__(self, config: MGNTConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, width: int, cache: tuple | None = None,
                sequence_positions: torch.Tensor | None = None) -> torch.Tensor:
        """`hidden_states [B, L, width]` -> `[B, L, width]`.

        With `cache` (this layer's key/value views `[B, h, 1 + N, head_dim]` and `batch_index [B, 1]`): when
        `sequence_positions [B, L]` is None the L = 1 + N tokens are the whole sequence and their K/V
        are written to the cache; otherwise the L tokens' K/V are written at those positions and the
        queries attend to the whole cache (their own fresh K/V plus everybody else's cached ones).
        """
        batch, length, _ = hidden_states.shape
        heads = self.config.heads_at(width)

        def project(linear):  # [B, L, width] -> [B, heads, L, head_dim]
            return _sliced_linear(linear, hidden_states, width, width).view(
                batch, length, heads, self.head_dim).transpose(1, 2)

        query, key, value = project(self.q_proj), project(self.k_proj), project(self.v_proj)
        if cache is not None:
            cached_keys, cached_values, batch_index = cache
            if sequence_positions is None:
                cached_keys.copy_(key)
                cached_values.copy_(value)
            else:
                # Advanced-index write of whole [heads, head_dim] rows at (row b, position p): 2-3x faster than
                # `scatter_` with an index expanded over heads and head_dim (measured on CPU, benchmarks/README).
                cached_keys.transpose(1, 2)[batch_index, sequence_positions] = key.transpose(1, 2).to(cached_keys.dtype)
                cached_values.transpose(1, 2)[batch_index, sequence_positions] = \
                    value.transpose(1, 2).to(cached_values.dtype)
                key, value = cached_keys.to(query.dtype), cached_values.to(query.dtype)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        return _sliced_linear(self.o_proj, attended, width, width)


class MGNTMLP(nn.Module):
    def __init__(self, config: MGNTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, width: int, intermediate: int) -> torch.Tensor:
        hidden_states = F.gelu(_sliced_linear(self.fc1, hidden_states, intermediate, width))
        return _sliced_linear(self.fc2, hidden_states, width, intermediate)


class MGNTLayer(GradientCheckpointingLayer):
    """Pre-LN transformer layer."""

    def __init__(self, config: MGNTConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = MGNTAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MGNTMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, width: int, intermediate: int, cache: tuple | None = None,
                sequence_positions: torch.Tensor | None = None) -> torch.Tensor:
        attended = self.attention(_sliced_layer_norm(self.attention_norm, hidden_states, width), width,
                                  cache=cache, sequence_positions=sequence_positions)
        hidden_states = hidden_states + self.dropout(attended)
        transformed = self.mlp(_sliced_layer_norm(self.mlp_norm, hidden_states, width), width, intermediate)
        return hidden_states + self.dropout(transformed)


class MGNTPreTrainedModel(PreTrainedModel):
    config_class = MGNTConfig
    config: MGNTConfig
    base_model_prefix = "mgnt"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MGNTEmbeddings", "MGNTLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MGNTEmbeddings):
            init.normal_(module.position_embeddings, mean=0.0, std=self.config.initializer_range)
            if module.temporal_position_embeddings is not None:
                init.normal_(module.temporal_position_embeddings, mean=0.0, std=self.config.initializer_range)


class MGNTTransformer(MGNTPreTrainedModel):
    """The MaGNeTS transformer: `[class token, N grid tokens]` -> logits over the codebook per grid token.

    `forward(..., width=w)` runs the nested sub-model of width `w` (one of `config.nested_widths`).
    """

    def __init__(self, config: MGNTConfig):
        super().__init__(config)
        self.embeddings = MGNTEmbeddings(config)
        self.layers = nn.ModuleList([MGNTLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.output_head = nn.Linear(config.hidden_size, config.codebook_size)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embeddings

    def set_input_embeddings(self, value: nn.Module):
        self.embeddings.token_embeddings = value

    def new_cache(self, batch_size: int, dtype: torch.dtype | None = None) -> MGNTKVCache:
        """An empty KV cache for `batch_size` sequences on this model's device (and dtype by default)."""
        return MGNTKVCache(self.config, batch_size, dtype=dtype or self.dtype, device=self.device)

    def _check_inputs(self, input_ids, class_labels, cache, active_positions, width):
        config = self.config
        if input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be a LongTensor of token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() == 1 + len(config.token_grid) and tuple(input_ids.shape[1:]) == config.token_grid:
            input_ids = input_ids.reshape(input_ids.shape[0], -1)
        if input_ids.dim() != 2 or input_ids.shape[1] != config.num_grid_tokens:
            raise ValueError(
                f"input_ids must have shape [B, {config.num_grid_tokens}] or [B, {', '.join(map(str, config.token_grid))}]"
                f" (token_grid {config.token_grid}), got {list(input_ids.shape)}"
            )
        if bool(((input_ids < 0) | (input_ids > config.mask_token_id)).any()):
            raise ValueError(
                f"input_ids must be in [0, {config.codebook_size}] (codebook ids, {config.mask_token_id} = mask)"
            )
        if not isinstance(class_labels, torch.Tensor) or class_labels.dtype != torch.long or class_labels.dim() != 1 \
                or class_labels.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"class_labels must be a LongTensor of shape [{input_ids.shape[0]}], got "
                f"{getattr(class_labels, 'dtype', type(class_labels).__name__)} {list(getattr(class_labels, 'shape', []))}"
            )
        if bool(((class_labels < 0) | (class_labels > config.null_class_id)).any()):
            raise ValueError(f"class_labels must be in [0, {config.num_classes}] ({config.null_class_id} = null class)")
        if active_positions is not None:
            if cache is None:
                raise ValueError("active_positions needs a cache built by a full pass (cache=None given)")
            if cache.width is None:
                raise ValueError("active_positions needs a built cache; run a full pass with this cache first")
            if cache.width != width:
                raise ValueError(
                    f"the cache was built at width {cache.width} but width {width} was requested; "
                    "rebuild it with a full pass at the new width"
                )
            if active_positions.dtype != torch.long or active_positions.dim() != 2 \
                    or active_positions.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"active_positions must be a LongTensor [B={input_ids.shape[0]}, A] of grid positions, "
                    f"got {active_positions.dtype} {list(active_positions.shape)}"
                )
            if bool(((active_positions < 0) | (active_positions >= config.num_grid_tokens)).any()):
                raise ValueError(f"active_positions must be grid positions in [0, {config.num_grid_tokens})")
        if cache is not None and cache.batch_size != input_ids.shape[0]:
            raise ValueError(f"the cache holds {cache.batch_size} sequences but the batch has {input_ids.shape[0]}")
        return input_ids

    def forward(
        self,
        input_ids: torch.LongTensor,
        class_labels: torch.LongTensor,
        width: int | None = None,
        cache: MGNTKVCache | None = None,
        active_positions: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MGNTTransformerOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` `[B, N]` or `[B, *token_grid]`): token ids in
                `[0, codebook_size]`; `codebook_size` is the mask token.
            class_labels (`torch.LongTensor` `[B]`): labels in `[0, num_classes]`; `num_classes` is the
                null class (unconditional branch of classifier-free guidance).
            width (`int`, *optional*): nested width to run, one of `config.nested_widths`; the full
                model when None.
            cache (`MGNTKVCache`, *optional*): without `active_positions`, the forward runs every
                token and (re)builds the cache at `width`; with them, it reads and updates the cache.
            active_positions (`torch.LongTensor` `[B, A]`, *optional*): grid positions to run. They
                attend to their own fresh keys/values and the cached ones of all other positions;
                their keys/values are written to the cache. Logits come back for these positions only.

        Returns:
            [`MGNTTransformerOutput`] with `logits` `[B, N or A, codebook_size]` (float32 unless the
            model runs in another dtype).
        """
        if kwargs:
            raise ValueError(f"unexpected arguments to MGNTTransformer.forward: {sorted(kwargs)}")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        width = self.config.check_width(width)
        input_ids = self._check_inputs(input_ids, class_labels, cache, active_positions, width)
        intermediate = self.config.intermediate_size_at(width)

        if active_positions is None:
            hidden_states = self.embeddings(input_ids, class_labels, width)  # [B, 1 + N, width]
            sequence_positions = None
        else:
            active_ids = torch.gather(input_ids, 1, active_positions)
            hidden_states = self.embeddings(active_ids, class_labels, width, grid_positions=active_positions,
                                            include_class_token=False)  # [B, A, width]
            sequence_positions = active_positions + 1  # the class token sits at position 0

        for layer_index, layer in enumerate(self.layers):
            layer_cache = None if cache is None else cache.layer(layer_index, width)
            hidden_states = layer(hidden_states, width, intermediate, cache=layer_cache,
                                  sequence_positions=sequence_positions)

        if active_positions is None:
            hidden_states = hidden_states[:, 1:]  # the class token has no output
            if cache is not None:
                cache.width = width
        hidden_states = _sliced_layer_norm(self.final_norm, hidden_states, width)
        logits = F.linear(hidden_states, self.output_head.weight[:, :width], self.output_head.bias)

        if not return_dict:
            return (logits,) if cache is None else (logits, cache)
        return MGNTTransformerOutput(logits=logits, cache=cache)


def count_forward_flops(config: MGNTConfig, width: int | None = None, batch_size: int = 1,
                        num_active_tokens: int | None = None) -> int:
    """FLOPs (2 x multiply-adds of every matmul) of one `MGNTTransformer.forward`.

    A full pass (`num_active_tokens=None`) runs all `1 + N` tokens and produces N logits rows; a
    cached pass runs `num_active_tokens` queries against `1 + N` keys and produces that many rows.
    Counted: q/k/v/o projections, QK^T, AV, both MLP matmuls, the output head. Not counted:
    embedding lookups, LayerNorms, softmax, activations (no matmuls).
    """
    width = config.check_width(width)
    sequence_length = 1 + config.num_grid_tokens
    if num_active_tokens is None:
        queries, output_rows = sequence_length, config.num_grid_tokens
    else:
        if not 0 <= num_active_tokens <= config.num_grid_tokens:
            raise ValueError(f"num_active_tokens must be in [0, {config.num_grid_tokens}], got {num_active_tokens}")
        queries = output_rows = num_active_tokens
    intermediate = config.intermediate_size_at(width)
    projections = 4 * queries * width * width
    attention = 2 * queries * sequence_length * width  # QK^T and AV
    mlp = 2 * queries * width * intermediate
    per_layer = projections + attention + mlp
    head = output_rows * width * config.codebook_size
    return 2 * batch_size * (config.num_hidden_layers * per_layer + head)
