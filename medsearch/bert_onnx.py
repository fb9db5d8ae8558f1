"""An ONNX graph of a BERT-style sentence encoder, built from its weights with ``onnx.helper`` (no torch, no export).

:func:`build_encoder` takes the Hugging Face ``config.json`` of a BERT model (:class:`BertShape` reads and checks
it) and its weights (a ``safetensors`` state dict as numpy arrays) and returns an ONNX model (opset 17) that
computes, for ``input_ids`` and ``attention_mask`` ``[batch, seq]`` (int64), what sentence-transformers computes
for a Transformer → mean Pooling → Normalize model: embeddings (word + token type 0 + absolute position, LayerNorm),
``num_hidden_layers`` post-LN encoder layers (multi-head self-attention with the padding masked out, exact erf
GELU), the mean of the token vectors under the attention mask, L2-normalised: ``sentence_embedding``
``[batch, hidden]`` float32. onnxruntime's graph optimisations fuse the GELU, bias and skip-LayerNorm patterns.

Only what such models use is supported; anything else (another architecture or activation, relative positions,
missing or misshapen weights) raises :class:`UnsupportedModel` naming the field or weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

OPSET = 17
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
OUTPUT = "sentence_embedding"


class UnsupportedModel(ValueError):
    """The config or the weights describe something this builder does not implement."""


@dataclass(frozen=True)
class BertShape:
    """What the graph needs from ``config.json``."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_norm_eps: float
    max_position_embeddings: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BertShape:
        model_type = config.get("model_type")
        if model_type != "bert":
            raise UnsupportedModel(f"config.json: model_type {model_type!r} is not supported (only 'bert')")
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise UnsupportedModel(
                f"config.json: hidden_act {act!r} is not supported (only 'gelu', the exact erf GELU)"
            )
        pos = config.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise UnsupportedModel(f"config.json: position_embedding_type {pos!r} is not supported (only 'absolute')")
        if config.get("is_decoder") or config.get("add_cross_attention"):
            raise UnsupportedModel("config.json: decoder / cross-attention models are not supported")
        try:
            shape = cls(
                hidden_size=int(config["hidden_size"]),
                num_hidden_layers=int(config["num_hidden_layers"]),
                num_attention_heads=int(config["num_attention_heads"]),
                intermediate_size=int(config["intermediate_size"]),
                layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
                max_position_embeddings=int(config["max_position_embeddings"]),
                vocab_size=int(config["vocab_size"]),
            )
        except KeyError as err:
            raise UnsupportedModel(f"config.json: {err.args[0]!r} is missing") from err
        except (TypeError, ValueError) as err:
            raise UnsupportedModel(f"config.json: a size is not a number ({err})") from err
        sizes = (shape.hidden_size, shape.num_hidden_layers, shape.num_attention_heads, shape.intermediate_size,
                 shape.max_position_embeddings, shape.vocab_size)
        if min(sizes) < 1 or not shape.layer_norm_eps > 0:
            raise UnsupportedModel(f"config.json: sizes must be positive ({shape})")
        if shape.hidden_size % shape.num_attention_heads:
            raise UnsupportedModel(
                f"config.json: hidden_size {shape.hidden_size} is not a multiple of "
                f"num_attention_heads {shape.num_attention_heads}"
            )
        return shape

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _weights(state: Mapping[str, NDArray[Any]], shape: BertShape) -> dict[str, NDArray[np.float32]]:
    """The state dict without a ``bert.`` prefix, every tensor checked against the config, as float32."""
    prefix = "bert." if any(k.startswith("bert.embeddings.") for k in state) else ""
    h, i, layers = shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers
    expected: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (shape.vocab_size, h),
        "embeddings.position_embeddings.weight": (shape.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (-1, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(layers):
        p = f"encoder.layer.{n}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            expected[f"{p}{name}.weight"] = (h, h)
            expected[f"{p}{name}.bias"] = (h,)
        expected[f"{p}intermediate.dense.weight"] = (i, h)
        expected[f"{p}intermediate.dense.bias"] = (i,)
        expected[f"{p}output.dense.weight"] = (h, i)
        expected[f"{p}output.dense.bias"] = (h,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            expected[f"{p}{ln}.weight"] = (h,)
            expected[f"{p}{ln}.bias"] = (h,)
    out: dict[str, NDArray[np.float32]] = {}
    missing = [k for k in expected if prefix + k not in state]
    if missing:
        raise UnsupportedModel(f"weights: {len(missing)} tensors missing, e.g. {missing[:3]}")
    if f"{prefix}encoder.layer.{layers}.attention.self.query.weight" in state:
        raise UnsupportedModel(f"weights: more encoder layers than num_hidden_layers={layers} in config.json")
    for key, want in expected.items():
        value = np.asarray(state[prefix + key])
        if value.ndim != len(want) or any(w not in (-1, d) for w, d in zip(want, value.shape, strict=True)):
            raise UnsupportedModel(f"weights: {prefix + key} has shape {value.shape}, config.json implies {want}")
        if not np.issubdtype(value.dtype, np.floating):
            raise UnsupportedModel(f"weights: {prefix + key} is {value.dtype}, not a float tensor")
        out[key] = value.astype(np.float32, copy=False)
    return out


class _Graph:
    """Collects nodes and initialisers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, value: NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._n}_{op_type}", **attrs))
        return out

    def linear(self, x: str, w: NDArray[np.float32], b: NDArray[np.float32], name: str) -> str:
        """``x @ w.T + b`` (PyTorch's Linear layout: ``w`` is ``[out, in]``)."""
        y = self.op("MatMul", [x, self.const(f"{name}.weight_t", np.ascontiguousarray(w.T))])
        return self.op("Add", [y, self.const(f"{name}.bias", b)])

    def layer_norm(self, x: str, w: NDArray[np.float32], b: NDArray[np.float32], eps: float, name: str) -> str:
        return self.op("LayerNormalization", [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)],
                       axis=-1, epsilon=eps)


def build_encoder(config: Mapping[str, Any], state: Mapping[str, NDArray[Any]]) -> Any:
    """The ONNX ``ModelProto`` of the sentence encoder (see the module docstring). Raises :class:`UnsupportedModel`."""
    from onnx import TensorProto, helper

    shape = BertShape.from_config(config)
    w = _weights(state, shape)
    g = _Graph()
    heads, head = shape.num_attention_heads, shape.head_size
    eps = shape.layer_norm_eps
    i64 = np.int64

    # Embeddings: word + token type 0 + position (0..seq-1), then LayerNorm (BertEmbeddings' order of additions).
    seq = g.op("Shape", [INPUT_IDS], start=1, end=2)
    x = g.op("Gather", [g.const("embeddings.word", w["embeddings.word_embeddings.weight"]), INPUT_IDS], axis=0)
    x = g.op("Add", [x, g.const("embeddings.token_type0", w["embeddings.token_type_embeddings.weight"][0])])
    positions = g.op("Slice", [g.const("embeddings.position", w["embeddings.position_embeddings.weight"]),
                               g.const("zero1", np.array([0], dtype=i64)), seq,
                               g.const("axis0", np.array([0], dtype=i64))])
    x = g.op("Add", [x, positions])
    x = g.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps, "embeddings.ln")

    # Padding: a large negative bias on masked keys, [batch, 1, 1, seq].
    mask = g.op("Cast", [ATTENTION_MASK], to=TensorProto.FLOAT)
    one = g.const("one", np.array(1.0, dtype=np.float32))
    bias = g.op("Mul", [g.op("Sub", [one, mask]), g.const("mask_min", np.array(np.finfo(np.float32).min, np.float32))])
    bias = g.op("Unsqueeze", [bias, g.const("axes12", np.array([1, 2], dtype=i64))])

    split_shape = g.const("heads_shape", np.array([0, 0, heads, head], dtype=i64))
    merged_shape = g.const("hidden_shape", np.array([0, 0, shape.hidden_size], dtype=i64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(head), dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))
    inv_sqrt2 = g.const("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), dtype=np.float32))
    for n in range(shape.num_hidden_layers):
        p = f"encoder.layer.{n}."

        def heads_of(t: str) -> str:
            return g.op("Reshape", [t, split_shape])

        q = heads_of(g.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"], f"l{n}.q"))
        k = heads_of(g.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"], f"l{n}.k"))
        v = heads_of(g.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"], f"l{n}.v"))
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [k], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merged_shape])
        attn = g.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"], f"l{n}.o")
        x = g.layer_norm(g.op("Add", [attn, x]), w[p + "attention.output.LayerNorm.weight"],
                         w[p + "attention.output.LayerNorm.bias"], eps, f"l{n}.attn_ln")
        hmid = g.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], f"l{n}.fc1")
        gelu = g.op("Mul", [g.op("Mul", [hmid, half]),
                            g.op("Add", [g.op("Erf", [g.op("Mul", [hmid, inv_sqrt2])]), one])])
        out = g.linear(gelu, w[p + "output.dense.weight"], w[p + "output.dense.bias"], f"l{n}.fc2")
        x = g.layer_norm(g.op("Add", [out, x]), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                         eps, f"l{n}.out_ln")

    # Mean pooling under the mask (count clamped at 1e-9), then x / max(||x||, 1e-12).
    mask3 = g.op("Unsqueeze", [mask, g.const("axis2", np.array([2], dtype=i64))])
    axis1 = g.const("axis1", np.array([1], dtype=i64))
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask3]), axis1], keepdims=0)
    min_count = g.const("min_count", np.array(1e-9, np.float32))
    count = g.op("Max", [g.op("ReduceSum", [mask3, axis1], keepdims=0), min_count])
    pooled = g.op("Div", [summed, count])
    min_norm = g.const("min_norm", np.array(1e-12, np.float32))
    norm = g.op("Max", [g.op("ReduceL2", [pooled], axes=[1], keepdims=1), min_norm])
    g.nodes.append(helper.make_node("Div", [pooled, norm], [OUTPUT], name="normalise"))

    graph = helper.make_graph(
        g.nodes,
        "bert_sentence_encoder",
        [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", shape.hidden_size])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="medsearch")
    model.ir_version = 8  # opset 17's IR version: loadable by every onnxruntime that supports opset 17
    return model
