"""The counting convention of `ablate.count`, as the text `ablate params --help` prints.

It is kept apart from count.py, which imports torch, so that the help comes without loading it.
A change to a rule in count.py's RULES is a change here.
"""

CONVENTION = """\
Counting convention (per input image unless --batch is given; eval mode):
- a conv or linear output element with K inputs (in_channels/groups x kh x kw, or in_features)
  costs K MACs and 2K FLOPs with a bias, 2K - 1 without: a multiply and an add are one FLOP each.
- other matrix products (x @ w, bmm) and attention: 2 FLOPs per multiply-accumulate;
  attention adds 3 FLOPs per score for its softmax.
- max-pool: k*k - 1 comparisons per output element; average pool: k*k per output element
  (adaptive pools: their actual window sizes); a mean over n values: n per output element;
  a vector norm: 2 per value.
- ReLU and other element-wise activations: 1 per element; batch norm (eval mode): 2 per
  element; layer and group norm: 5 per element (4 without affine); softmax: 3 per element;
  element-wise add, subtract, multiply, divide (residuals): 1 per output element.
- LSTM, GRU, RNN and their cells, per time step, layer and direction, with G gates (LSTM 4,
  GRU 3, RNN 1), hidden size H, input size I: G*H*(I + H) MACs and G*H*(2(I + H) + 1) FLOPs
  (two products and the add joining them; G*H*(2(I + H) - 1) without biases), plus the cell's
  element-wise work: LSTM 9*H (3 sigmoids, tanh, c = f*c + i*g, h = o*tanh(c)), GRU 7*H
  (2 sigmoids, tanh, r*(W_hn h + b_hn), h = n + z*(h - n)), RNN H; an LSTM projection to P
  adds H*P MACs, 2*H*P - P FLOPs. The same count on every backend.
- backward (--training), counted on the operators torch runs for the gradients of the
  inputs and of the weights (none for the image: a first conv computes only its weight and
  bias gradients): each gradient of a product is a product, 2 FLOPs per MAC; a bias gradient
  is a sum, n - 1 adds for n values; ReLU and clamps 1 per element, other activations 2;
  norms, softmax and attention twice their forward; max-pool 1 per output element, other
  pools as their forward; gradients meeting at a residual 1 per element; recurrent layers
  twice their forward. The loss and the optimiser step are not counted.
- views, copies, concatenation and padding cost nothing. Any other operator that produces
  floating-point output has no rule: it is reported in a warning with its count of calls.
- parameters: each in the first row whose code uses it (a functional use counts, such as
  MultiheadAttention's out_proj); later rows show it under shared. A parameter whose name
  contains "bias" is a bias. Parameters that no code used get rows marked "not run" (or
  "not used", where their module ran).
"""
