"""MGNT transformer: a bidirectional masked-token transformer with nested widths and a KV cache.

The model of width `w` is the leading slice of every shared tensor (DESIGN §1): embedding
columns `[:w]`, LayerNorms `[:w]`, the first `w / head_dim` heads, MLP `[:r*w, :w]` and
`[:w, :r*w]`, output-head columns `[:w]`. Slices of row-major weights are strided views that
`F.linear` hands to BLAS directly, so no width ever copies weights.

Sequence layout: position 0 is the class token, positions `1..N` the grid tokens in row-major
order of `config.token_grid`.

transformers' conventions, as in its own modeling files: the attention kernel is
`config._attn_implementation` through `ALL_ATTENTION_FUNCTIONS` ("sdpa", the default, or "eager");
`output_hidden_states` / `output_attentions` are recorded by transformers' output-capturing hooks
(`_can_record_outputs`, `capture_outputs`); `labels` give a masked-LM style `loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.output_capturing import capture_outputs

from .configuration_mgnt import MGNTConfig
from .utils.checks import check_choice
from .weights import SafetensorsOnlyMixin

# torch.compile's modes, for `MGNTTransformer.compile_layers`.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Compiled layer shapes kept per process (dynamo's recompile limit): several decodes' step shapes.
COMPILED_SHAPES_LIMIT = 64

# Keyword arguments of `MGNTTransformer.forward` besides its named ones (the transformers conventions it honours).
FORWARD_KWARGS = ("output_attentions", "output_hidden_states", "num_items_in_batch")


def _is_traced() -> bool:
    """Whether this forward is traced (torch.compile, torch.export, torch.jit.trace): no data-dependent checks."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


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
        # Looked up per layer and forward; config attribute reads cost microseconds each.
        self.heads_at_width = {width: config.heads_at(width) for width in config.nested_widths}
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
        heads = self.heads_at_width[width]
        return self.keys[layer_index, :, :heads], self.values[layer_index, :, :heads], self.batch_index


def _flatten_cache(cache: MGNTKVCache):
    return [cache.keys, cache.values, cache.batch_index], (cache.config, cache.width)


def _flatten_cache_with_keys(cache: MGNTKVCache):
    children, context = _flatten_cache(cache)
    names = ("keys", "values", "batch_index")
    return [(pytree.GetAttrKey(name), child) for name, child in zip(names, children)], context


def _unflatten_cache(children, context) -> MGNTKVCache:
    cache = MGNTKVCache.__new__(MGNTKVCache)
    cache.keys, cache.values, cache.batch_index = children
    cache.config, cache.width = context
    cache.heads_at_width = {width: cache.config.heads_at(width) for width in cache.config.nested_widths}
    return cache


# A pytree node (its tensors are the leaves), so torch.export takes a cache as an input of a cached forward.
pytree.register_pytree_node(MGNTKVCache, _flatten_cache, _unflatten_cache, serialized_type_name="mgnt_hf.MGNTKVCache",
                            flatten_with_keys_fn=_flatten_cache_with_keys)


@dataclass
class MGNTTransformerOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given): mean
            cross-entropy of the logits against the labels over the scored positions (those not -100).
        logits (`torch.FloatTensor` of shape `[B, N, codebook_size]`, or `[B, A, codebook_size]` when
            `active_positions` of `A` positions were given): scores over the codebook for every grid
            position that ran.
        cache (`MGNTKVCache`, *optional*): the cache passed in, now holding this forward's keys/values.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            the embeddings output and every layer's output (before the final LayerNorm),
            `num_hidden_layers + 1` tensors `[B, 1 + N, width]` (class token first) for a full pass,
            `[B, A, width]` (the active positions) for a cached pass.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True` with
            the "eager" attention implementation): every layer's attention weights after the softmax,
            `[B, heads(width), L, 1 + N]` with `L` = `1 + N` (full pass) or `A` (cached pass).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: MGNTKVCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def _sliced_layer_norm(norm: nn.LayerNorm, hidden_states: torch.Tensor, width: int) -> torch.Tensor:
    return F.layer_norm(hidden_states, (width,), norm.weight[:width], norm.bias[:width], norm.eps)


def _sliced_linear(linear: nn.Linear, hidden_states: torch.Tensor, out_features: int, in_features: int):
    bias = None if linear.bias is None else linear.bias[:out_features]
    return F.linear(hidden_states, linear.weight[:out_features, :in_features], bias)


class MGNTEmbeddings(nn.Module):
    """Token, class and learned position embeddings: a time table (video) plus a table per (h, w) position
    (`position_embedding_type="joint"`) or a row and a column table (`"factorized"`)."""

    def __init__(self, config: MGNTConfig):
        super().__init__()
        self.token_grid = config.token_grid
        self.token_embeddings = nn.Embedding(config.codebook_size + 1, config.hidden_size)  # + mask id
        self.class_embeddings = nn.Embedding(config.num_classes + 1, config.hidden_size)  # + null class
        height, width = config.token_grid[-2:]
        if config.position_embedding_type == "joint":
            self.position_embeddings = nn.Parameter(torch.zeros(height * width, config.hidden_size))
            self.row_position_embeddings = self.column_position_embeddings = None
        else:
            self.position_embeddings = None
            self.row_position_embeddings = nn.Parameter(torch.zeros(height, config.hidden_size))
            self.column_position_embeddings = nn.Parameter(torch.zeros(width, config.hidden_size))
        if len(config.token_grid) == 3:
            self.temporal_position_embeddings = nn.Parameter(torch.zeros(config.token_grid[0], config.hidden_size))
        else:
            self.temporal_position_embeddings = None

    def grid_position_embeddings(self, width: int) -> torch.Tensor:
        """`[N, width]` position embedding of every grid token (row-major over (t,) h, w)."""
        if self.position_embeddings is not None:
            spatial = self.position_embeddings[:, :width]
        else:
            rows, columns = self.row_position_embeddings[:, :width], self.column_position_embeddings[:, :width]
            spatial = (rows[:, None, :] + columns[None, :, :]).reshape(-1, width)
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


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T * scaling) V, explicitly: `[B, h, L, d]` queries -> `([B, L, h, d], weights [B, h, L, S])`.

    `scaling` None is SDPA's default, `1 / sqrt(head_dim)`.
    """
    if scaling is None:
        scaling = 1.0 / math.sqrt(query.shape[-1])
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class MGNTAttention(nn.Module):
    """Bidirectional multi-head self-attention over the first `heads(width)` heads.

    The kernel is `config._attn_implementation` through transformers' `ALL_ATTENTION_FUNCTIONS`: "sdpa"
    (`F.scaled_dot_product_attention`, the default) or "eager" (`eager_attention_forward`, which also
    returns the attention weights). `slice_size` (set by `MGNTTransformer.set_attention_slice`) runs the
    queries in slices of that many (`"auto"`: two slices), each against all keys.
    """

    def __init__(self, config: MGNTConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.head_dim
        self.heads_at_width = {width: config.heads_at(width) for width in config.nested_widths}
        self.is_causal = False
        # None: SDPA's default scale, 1 / sqrt(head_dim) (passing it explicitly may round differently).
        self.scaling = None
        self.slice_size: int | str | None = None
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, width: int, cache: tuple | None = None,
                sequence_positions: torch.Tensor | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states [B, L, width]` -> (`[B, L, width]`, attention weights `[B, h, L, 1 + N]` or None).

        With `cache` (this layer's key/value views `[B, h, 1 + N, head_dim]` and `batch_index [B, 1]`): when
        `sequence_positions [B, L]` is None the L = 1 + N tokens are the whole sequence and their K/V
        are written to the cache; otherwise the L tokens' K/V are written at those positions and the
        queries attend to the whole cache (their own fresh K/V plus everybody else's cached ones).
        """
        batch, length, _ = hidden_states.shape
        heads = self.heads_at_width[width]

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

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        slice_size = self.query_slice_size(length)
        slices = [attention_interface(self, query[:, :, start:start + slice_size], key, value, None,
                                      scaling=self.scaling, dropout=0.0, **kwargs)
                  for start in range(0, length, slice_size)]
        if len(slices) == 1:
            attended, attn_weights = slices[0]
        else:
            attended = torch.cat([output for output, _ in slices], dim=1)
            attn_weights = None if slices[0][1] is None else torch.cat([weights for _, weights in slices], dim=2)
        attended = attended.reshape(batch, length, width)
        return _sliced_linear(self.o_proj, attended, width, width), attn_weights

    def query_slice_size(self, num_queries: int) -> int:
        """Queries per attention slice for `num_queries` queries (all of them without slicing)."""
        if self.slice_size is None:
            return num_queries
        if self.slice_size == "auto":
            return max(1, math.ceil(num_queries / 2))
        return self.slice_size


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
                sequence_positions: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        attended, _ = self.attention(_sliced_layer_norm(self.attention_norm, hidden_states, width), width,
                                     cache=cache, sequence_positions=sequence_positions, **kwargs)
        hidden_states = hidden_states + self.dropout(attended)
        transformed = self.mlp(_sliced_layer_norm(self.mlp_norm, hidden_states, width), width, intermediate)
        return hidden_states + self.dropout(transformed)


class MGNTPreTrainedModel(SafetensorsOnlyMixin, PreTrainedModel):
    config_class = MGNTConfig
    config: MGNTConfig
    # (tensor name pattern, config field, the field's value a saved shape means): `mgnt_hf.weights` names the field
    # when a config disagrees with its weights. Tried in order; the first whose value differs is reported.
    config_fields_of_weights = (
        (r"embeddings\.token_embeddings\.weight", "codebook_size", lambda shape: shape[0] - 1),  # + the mask id
        (r"output_head\.(weight|bias)", "codebook_size", lambda shape: shape[0]),
        (r"embeddings\.class_embeddings\.weight", "num_classes", lambda shape: shape[0] - 1),  # + the null class
        (r"embeddings\.position_embeddings", "token_grid", lambda shape: f"of {shape[0]} (h x w) positions"),
        (r"embeddings\.temporal_position_embeddings", "token_grid", lambda shape: f"of {shape[0]} latent frames"),
        (r"embeddings\.row_position_embeddings", "token_grid", lambda shape: f"of {shape[0]} token rows"),
        (r"embeddings\.column_position_embeddings", "token_grid", lambda shape: f"of {shape[0]} token columns"),
        (r"layers\.\d+\.mlp\.fc1\.weight", "intermediate_size", lambda shape: shape[0]),
        (r"embeddings\.token_embeddings\.weight", "hidden_size", lambda shape: shape[1]),
    )
    base_model_prefix = "mgnt"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MGNTEmbeddings", "MGNTLayer"]
    _supports_sdpa = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": MGNTLayer,
        "attentions": MGNTAttention,
    }

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MGNTEmbeddings):
            for table in (module.position_embeddings, module.row_position_embeddings,
                          module.column_position_embeddings, module.temporal_position_embeddings):
                if table is not None:
                    init.normal_(table, mean=0.0, std=self.config.initializer_range)


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
        self.loss_type = "ForMaskedLM"  # cross-entropy over the positions whose label is not -100
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embeddings

    def set_input_embeddings(self, value: nn.Module):
        self.embeddings.token_embeddings = value

    def extract_submodel(self, width: int) -> MGNTTransformer:
        """The nested sub-model of width `width` as a standalone `MGNTTransformer` of hidden size `width`.

        Its config is this one with `hidden_size=width`, `heads_at(width)` heads, `intermediate_size_at(width)`
        MLP units and the nested widths up to `width`; every tensor is a copy of the leading block of this model's
        tensor of the same name (the nesting rule, DESIGN §1: embedding and output-head columns `[:width]`,
        LayerNorms `[:width]`, q/k/v/o `[:width, :width]`, MLP `[:r*width, :width]` and `[:width, :r*width]`), so
        its `forward(width=w)` equals this model's `forward(width=w)` for every `w <= width` (fp32 rounding: the
        copies are contiguous where the slices were strided), with or without the cache. Same dtype, device,
        attention implementation and train/eval mode; the copies share no storage with this model, so it saves,
        loads and pushes like any `MGNTTransformer`.

        Args:
            width: one of `config.nested_widths` (`ValueError` otherwise); the largest gives a copy of the model.
        """
        config = self.config
        if width is None:  # forward's "full model" default would make a copy nobody asked for
            raise ValueError(f"width None is not one of nested_widths {list(config.nested_widths)}")
        width = config.check_width(width)
        sub_config = MGNTConfig.from_dict({
            **config.to_dict(),
            "hidden_size": width,
            "num_attention_heads": config.heads_at(width),
            "intermediate_size": config.intermediate_size_at(width),
            "nested_widths": [nested for nested in config.nested_widths if nested <= width],
        })
        sub_config._attn_implementation = config._attn_implementation
        # Built on the meta device: its random initialisation would be overwritten by the copies anyway.
        with torch.device("meta"):
            submodel = MGNTTransformer(sub_config)
        parent_state = self.state_dict()
        sliced_state = {}
        for name, meta_tensor in submodel.state_dict().items():
            parent_tensor = parent_state[name]
            leading_block = tuple(slice(0, size) for size in meta_tensor.shape)
            sliced_state[name] = parent_tensor[leading_block].clone(memory_format=torch.contiguous_format)
        submodel.load_state_dict(sliced_state, assign=True)
        return submodel.train(self.training)

    def compile_layers(self, mode: str = "default", backend: str | Callable = "inductor",
                       dynamic: bool | None = None) -> None:
        """Opt-in `torch.compile` of every transformer layer in place (`nn.Module.compile`); outputs are unchanged.

        The layers, not the whole forward, are compiled: the input checks and the cache bookkeeping of `forward`
        stay eager. The per-step shapes of a decode (width, number of active tokens) are fixed by the schedule,
        so each compiles once; dynamo's process-wide recompile limit is raised to `COMPILED_SHAPES_LIMIT` so that
        the steps past the eighth shape do not fall back to eager. `mode="reduce-overhead"` captures CUDA graphs
        on CUDA. On a CPU, before that limit was raised, it gave about 10% on the full-width baseline and nothing
        on the cached decode (benchmarks/README.md); the first call pays the compilation (minutes, cold cache).

        Args:
            mode: one of `COMPILE_MODES` (`torch.compile`'s modes).
            backend: a `torch.compile` backend, by name (`"inductor"`; `"eager"` only traces) or callable.
            dynamic: `torch.compile`'s `dynamic`.
        """
        check_choice("mode", mode, COMPILE_MODES)
        if not callable(backend) and not (isinstance(backend, str) and backend):
            raise ValueError(f"backend must be a torch.compile backend (a name or a callable), got {backend!r}")
        if dynamic is not None and not isinstance(dynamic, bool):
            raise ValueError(f"dynamic must be True, False or None, got {dynamic!r}")
        # The layers share one code object, and every step shape of a decode is its own graph (12 steps, 12
        # shapes); at dynamo's default limit of 8 compilations per code object the remaining steps would fall
        # back to eager without an error. The limit is process-wide, so it is only ever raised.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_SHAPES_LIMIT)
        for layer in self.layers:
            layer.compile(mode=mode, backend=backend, dynamic=dynamic)

    def new_cache(self, batch_size: int, dtype: torch.dtype | None = None) -> MGNTKVCache:
        """An empty KV cache for `batch_size` sequences on this model's device (and dtype by default)."""
        return MGNTKVCache(self.config, batch_size, dtype=dtype or self.dtype, device=self.device)

    def set_attention_slice(self, slice_size: int | str | None) -> None:
        """Compute attention in slices of queries (each slice against all keys), to bound its memory.

        What diffusers' `pipeline.enable_attention_slicing(slice_size)` calls on its components.

        Args:
            slice_size: `"auto"`: two slices (half the queries each); `"max"`: one query at a time (least
                memory); an `int`: that many queries per slice, at most `1 + num_grid_tokens`; `None`: no
                slicing (`disable_attention_slicing`). Unlike diffusers' UNets, which slice over heads, the
                slices run over queries: the score matrix of a slice is `[B, heads, slice, 1 + N]`.
        """
        longest = 1 + self.config.num_grid_tokens
        if slice_size == "max":
            slice_size = 1
        valid_int = isinstance(slice_size, int) and not isinstance(slice_size, bool) and 1 <= slice_size <= longest
        if not (slice_size is None or slice_size == "auto" or valid_int):
            raise ValueError(
                f"attention slice_size must be 'auto', 'max', None or an int number of queries per slice in "
                f"[1, {longest}] (1 + num_grid_tokens), got {slice_size!r}"
            )
        for module in self.modules():
            if isinstance(module, MGNTAttention):
                module.slice_size = slice_size

    def _check_grid(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A LongTensor `[B, N]` or `[B, *token_grid]` -> `[B, N]` (`ValueError` otherwise)."""
        config = self.config
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.long:
            raise ValueError(f"{name} must be a LongTensor of token ids, got {getattr(tensor, 'dtype', type(tensor))}")
        if tensor.dim() == 1 + len(config.token_grid) and tuple(tensor.shape[1:]) == config.token_grid:
            tensor = tensor.reshape(tensor.shape[0], -1)
        if tensor.dim() != 2 or tensor.shape[1] != config.num_grid_tokens:
            raise ValueError(
                f"{name} must have shape [B, {config.num_grid_tokens}] or [B, {', '.join(map(str, config.token_grid))}]"
                f" (token_grid {config.token_grid}), got {list(tensor.shape)}"
            )
        return tensor

    def _check_inputs(self, input_ids, class_labels, cache, active_positions, width, labels, check_values=True):
        """The shape, dtype and cache checks; the value-range checks too unless traced or `check_values` is
        False (they read the data)."""
        input_ids = self._check_grid("input_ids", input_ids)
        batch = input_ids.shape[0]
        if not isinstance(class_labels, torch.Tensor) or class_labels.dtype != torch.long or class_labels.dim() != 1 \
                or class_labels.shape[0] != batch:
            raise ValueError(
                f"class_labels must be a LongTensor of shape [{batch}], got "
                f"{getattr(class_labels, 'dtype', type(class_labels).__name__)} "
                f"{list(getattr(class_labels, 'shape', []))}"
            )
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
                    or active_positions.shape[0] != batch:
                raise ValueError(
                    f"active_positions must be a LongTensor [B={batch}, A] of grid positions, "
                    f"got {active_positions.dtype} {list(active_positions.shape)}"
                )
        if cache is not None and cache.batch_size != batch:
            raise ValueError(f"the cache holds {cache.batch_size} sequences but the batch has {batch}")
        if labels is not None:
            labels = self._check_grid("labels", labels)
            if labels.shape[0] != batch:
                raise ValueError(f"labels must have the batch size of input_ids ({batch}), got {labels.shape[0]}")
        if check_values and not _is_traced():
            self._check_values(input_ids, class_labels, active_positions, labels)
        return input_ids, labels

    def _check_values(self, input_ids, class_labels, active_positions, labels) -> None:
        config = self.config
        if bool(((input_ids < 0) | (input_ids > config.mask_token_id)).any()):
            raise ValueError(
                f"input_ids must be in [0, {config.codebook_size}] (codebook ids, {config.mask_token_id} = mask)"
            )
        if bool(((class_labels < 0) | (class_labels > config.null_class_id)).any()):
            raise ValueError(f"class_labels must be in [0, {config.num_classes}] ({config.null_class_id} = null class)")
        if active_positions is not None and \
                bool(((active_positions < 0) | (active_positions >= config.num_grid_tokens)).any()):
            raise ValueError(f"active_positions must be grid positions in [0, {config.num_grid_tokens})")
        if labels is not None and bool((((labels < 0) | (labels >= config.codebook_size)) & (labels != -100)).any()):
            raise ValueError(f"labels must be codebook ids in [0, {config.codebook_size}) or -100 (not scored)")

    # No `merge_with_config_defaults`: it injects `config.use_cache` (Trainer sets one), and the cache is explicit here.
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.LongTensor,
        class_labels: torch.LongTensor,
        width: int | None = None,
        cache: MGNTKVCache | None = None,
        active_positions: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        check_values: bool = True,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MGNTTransformerOutput:
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
            labels (`torch.LongTensor` `[B, N]` or `[B, *token_grid]`, *optional*): target codebook ids
                of the grid positions, -100 where not scored (as for masked-LM models); `loss` is their
                cross-entropy at `width`. In a cached pass the labels of the active positions count.
            check_values (`bool`, defaults to `True`): check that ids, class labels, positions and labels are in
                range. The check reads the tensors on the host (a device synchronisation); a decode loop whose
                inputs were checked once skips it. Shapes, dtypes and the cache are always checked.
            output_hidden_states, output_attentions, return_dict, num_items_in_batch: transformers'
                conventions (config defaults; attention weights need `attn_implementation="eager"`;
                `num_items_in_batch` sums the loss and divides by it, as Trainer's gradient accumulation does).

        Returns:
            [`MGNTTransformerOutput`] (a tuple without its None fields if `return_dict=False`) with `logits`
            `[B, N or A, codebook_size]` (float32 unless the model runs in another dtype).
        """
        unexpected = sorted(set(kwargs) - set(FORWARD_KWARGS))
        if unexpected:
            raise ValueError(f"unexpected arguments to MGNTTransformer.forward: {unexpected}")
        width = self.config.check_width(width)
        input_ids, labels = self._check_inputs(input_ids, class_labels, cache, active_positions, width, labels,
                                               check_values)
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
                                  sequence_positions=sequence_positions, **kwargs)

        if active_positions is None:
            hidden_states = hidden_states[:, 1:]  # the class token has no output
            if cache is not None:
                cache.width = width
        hidden_states = _sliced_layer_norm(self.final_norm, hidden_states, width)
        logits = F.linear(hidden_states, self.output_head.weight[:, :width], self.output_head.bias)

        loss = None
        if labels is not None:
            if active_positions is not None:
                labels = torch.gather(labels, 1, active_positions)
            loss = self.loss_function(logits, labels, vocab_size=self.config.codebook_size,
                                      num_items_in_batch=kwargs.get("num_items_in_batch"))
        return MGNTTransformerOutput(loss=loss, logits=logits, cache=cache)


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


# Registered where both classes exist, so every way of importing them (a name from `mgnt_hf`, this module, a saved
# pipeline's model_index.json) lets AutoConfig/AutoModel load saved "mgnt" models.
AutoConfig.register("mgnt", MGNTConfig, exist_ok=True)
AutoModel.register(MGNTConfig, MGNTTransformer, exist_ok=True)
