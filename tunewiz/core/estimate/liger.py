"""What Liger's fused kernels keep for the backward pass, per term (liger-kernel 0.8.5).

Each function states the tensors the kernel allocates or saves, with the source lines of
github.com/linkedin/Liger-Kernel, src/liger_kernel/ops/ (read from the 0.8.5 wheel):

- fused linear cross-entropy (`fused_linear_cross_entropy.py`): the logits are computed
  chunk by chunk and the gradient of the input is computed inside the forward pass, so
  neither the full logits nor the lm_head's input is kept;
- RMSNorm (`rms_norm.py`): keeps its input in its own dtype plus one fp32 rstd per row,
  where PyTorch's RMSNorm keeps an fp32 copy (and its output when the weight trains);
- SwiGLU/GeGLU (`swiglu.py`, `geglu.py` line 138): keeps gate and up and recomputes the activation
  in the backward pass, where autograd keeps gate, act(gate) and up.

RoPE (`rope.py`) rotates q and k in place and keeps only cos/sin, as PyTorch's rotation
(multiplications by cos/sin that need no gradient) already does: no term changes.

Pure arithmetic over plain numbers, so `tunewiz.core.estimate.memory` calls it with the dtypes it
has already worked out.
"""

from __future__ import annotations


def _next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def flce_chunk_tokens(tokens: int, vocab: int, hidden: int) -> int:
    """Rows of logits alive at once in LigerFusedLinearCrossEntropy.

    fused_linear_cross_entropy.py lines 102-105 (_CHUNK_MEM_CONST = 1, line 27):
    `inc_factor = cdiv(V, H)`; `chunk_size = min(next_power_of_2(cdiv(BT, inc_factor)), BT)`,
    so a chunk of logits holds about BT x H values whatever the vocabulary.
    """
    inc_factor = -(-vocab // hidden)
    return min(_next_power_of_2(-(-tokens // inc_factor)), tokens)


def flce_bytes(
    *,
    tokens: int,
    vocab: int,
    hidden: int,
    compute_bytes: int,
    hidden_bytes: int,
    head_grad_bytes: int,
) -> float:
    """Loss buffers of fused linear cross-entropy at its peak (inside the forward pass).

    - one chunk of logits, `chunk x V` in the matmul's dtype (`logits_storage`, line 150, or
      `_input_chunk @ weight.t()` under autocast, line 168); the cross-entropy kernel writes
      the gradient in place into it (line 250) and it is freed per chunk (line 285);
    - `grad_input = zeros_like(_input)`: BT x H in the hidden states' dtype (line 108), saved
      for the backward pass (line 574) in place of the hidden states;
    - `loss_1d`: BT fp32 (line 125);
    - `grad_weight = zeros_like(weight)` (line 116) when the LM head trains (full fine-tuning):
      V x H in the weight's dtype, computed here instead of in the backward pass
      (`head_grad_bytes` 0 when the head is frozen).
    """
    chunk = flce_chunk_tokens(tokens, vocab, hidden)
    return (
        chunk * vocab * compute_bytes
        + tokens * hidden * hidden_bytes
        + 4 * tokens
        + head_grad_bytes * vocab * hidden
    )


def rms_norm_saved_bytes(hidden: int, input_bytes: int) -> float:
    """Per token: LigerRMSNormFunction saves X (in its dtype), W and RSTD (rms_norm.py line 674);
    RSTD is fp32, one per row (line 465). dW is recomputed from X and RSTD, so nothing
    more is kept when the weight trains."""
    return hidden * input_bytes + 4


def gated_mlp_saved_tensors(full: bool) -> int:
    """Tensors of the intermediate width kept per token: LigerSiLUMulFunction saves a (gate)
    and b (up) only (swiglu.py line 272) and recomputes silu(a) in backward; down_proj keeps
    the product when it trains."""
    return 2 + (1 if full else 0)
