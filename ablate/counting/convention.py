"""The counting convention in words: what each rule of `ablate.counting.count_rules` counts, and the text
`ablate params --help` prints, made from those words.

The words live here and the formulas in count_rules.py because the help must come without
importing torch. Each rule there has its words here under the same name; tests/test_convention.py
checks both ways, so a rule cannot go unprinted nor words outlive their rule.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

HEADER = "Counting convention (per input image unless --batch is given; eval mode):"
WIDTH = 97  # the help prints the convention as it is, not rewrapped


@dataclass(frozen=True)
class Item:
    """One item of the printed convention: some words, the words of its rules, some more."""

    rules: dict[str, str] = field(default_factory=dict)  # rule name -> what it counts
    before: str = ""
    after: str = ""

    def text(self) -> str:
        return self.before + "; ".join(self.rules.values()) + "." + self.after


ITEMS = (
    Item({
        "products": "a conv or linear output element with K inputs (in_channels/groups x kh x kw, or "
                    "in_features) costs K MACs and 2K FLOPs with a bias, 2K - 1 without: a multiply and "
                    "an add are one FLOP each; other matrix products (x @ w, bmm): 2 FLOPs per "
                    "multiply-accumulate",
        "attention": "attention: 2 FLOPs per multiply-accumulate, and 3 FLOPs per score for its softmax",
    }),
    Item({
        "pools": "max-pool: k*k - 1 comparisons per output element; average pool: k*k per output element "
                 "(adaptive pools: their actual window sizes)",
        "mean": "a mean over n values: n per output element",
        "sum": "a sum over n values: n - 1 per output element",
        "vector_norm": "a vector norm: 2 per value",
    }),
    Item({
        "activations": "ReLU and other element-wise activations: 1 per element",
        "batch_norm": "batch norm (eval mode): 2 per element",
        "norms": "layer and group norm: 5 per element (4 without affine)",
        "softmax": "softmax: 3 per element",
        "arithmetic": "element-wise add, subtract, multiply, divide (residuals) and other arithmetic "
                      "(exp, sqrt, pow, ...): 1 per output element",
    }),
    Item({
        "recurrent": "LSTM, GRU, RNN and their cells, per time step, layer and direction, with G gates "
                     "(LSTM 4, GRU 3, RNN 1), hidden size H, input size I: G*H*(I + H) MACs and "
                     "G*H*(2(I + H) + 1) FLOPs (two products and the add joining them; G*H*(2(I + H) - 1) "
                     "without biases), plus the cell's element-wise work: LSTM 9*H (3 sigmoids, tanh, "
                     "c = f*c + i*g, h = o*tanh(c)), GRU 7*H (2 sigmoids, tanh, r*(W_hn h + b_hn), "
                     "h = n + z*(h - n)), RNN H; an LSTM projection to P adds H*P MACs, 2*H*P - P FLOPs. "
                     "The same count on every backend",
    }),
    Item({
        "product_gradients": "each gradient of a product is a product, 2 FLOPs per MAC; a bias gradient "
                             "is a sum, n - 1 adds for n values",
        "selecting_gradients": "ReLU and clamps 1 per element",
        "activation_gradients": "other activations 2",
        "twice_forward": "norms, softmax and attention twice their forward",
        "pool_gradients": "max-pool 1 per output element, other pools as their forward",
        "gather_gradients": "embeddings and indexing 1 per gradient value (repeated indices add up)",
        "recurrent_gradients": "recurrent layers twice their forward",
    }, before="backward (--training), counted on the operators torch runs for the gradients of the "
              "inputs and of the weights (none for the image: a first conv computes only its weight and "
              "bias gradients), by the rules above where they are the same operators (gradients meeting "
              "at a residual: an add, 1 per element) and these: ",
       after=" The loss and the optimiser step are not counted."),
    Item({
        "free": "views, copies, concatenation and padding cost nothing",
    }, after=" Any other operator that produces floating-point output has no rule: it is reported in a "
             "warning with its count of calls."),
    Item(before='parameters: each in the first row whose code uses it (a functional use counts, such as '
                'MultiheadAttention\'s out_proj); later rows show it under shared. A parameter whose name '
                'contains "bias" is a bias. Parameters that no code used get rows marked "not run" (or '
                '"not used", where their module ran)'),
)

RULES: dict[str, str] = {name: words for item in ITEMS for name, words in item.rules.items()}


def _bullet(text: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent="- ", subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False)


CONVENTION = "\n".join([HEADER, *(_bullet(item.text()) for item in ITEMS)]) + "\n"
