"""What each chapter of the report opens with: the idea, the one equation that matters, where it lives.

Equations are plain Unicode text, so the page needs no maths typesetting script. Every module path
named here, and every chapter's notebook, is checked by the tests to exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChapterIntro:
    idea: str
    equation: str
    modules: tuple[str, ...]  # dotted paths of the code that implements the idea
    notebook: str  # the chapter's notebook, relative to the repository root


@dataclass(frozen=True)
class PartIntro:
    """A part of a chapter, opening before the section of one experiment: a title, then as a chapter."""

    title: str
    idea: str
    equation: str
    modules: tuple[str, ...]


INTROS: dict[str, ChapterIntro] = {
    "foundations": ChapterIntro(
        "A classifier turns an image into scores, the softmax turns scores into class probabilities, and "
        "training lowers the cross-entropy of the true class on the training images.",
        "ŷ = softmax(W x + b),   ℓ = −log ŷ_y",
        ("divekit.models.softmax_regression", "divekit.models.mlp", "divekit.train.trainer"),
        "notebooks/01_foundations.py",
    ),
    "generalization": ChapterIntro(
        "A model that fits its training data can still fail on new data; capacity control (fewer "
        "features, a weight penalty, dropout) trades training fit for a smaller gap.",
        "L_λ(w) = L(w) + (λ/2) ‖w‖²",
        ("divekit.experiments.polynomial_fit", "divekit.experiments.weight_decay", "divekit.nn.dropout"),
        "notebooks/02_generalization.py",
    ),
    "stability": ChapterIntro(
        "A gradient through many layers is a product of many Jacobians, so it vanishes or explodes unless "
        "the initial weights keep each layer's variance near one; clipping and batch norm guard the rest.",
        "Var[W] = 2 / (n_in + n_out)   (Xavier; Kaiming uses 2 / n_in for ReLU)",
        ("divekit.nn.init", "divekit.nn.clip", "divekit.nn.batchnorm"),
        "notebooks/03_numerical_stability.py",
    ),
    "shift": ChapterIntro(
        "When test data come from another distribution than training data, reweighting the training "
        "examples by how likely they are under the target corrects the expected loss, if the shift is of "
        "inputs (covariate) or of labels (label shift).",
        "β(x) = p_target(x) / p_source(x) = exp(h(x)) · n_source / n_target",
        ("divekit.shift.covariate", "divekit.shift.label", "divekit.shift.concept"),
        "notebooks/04_distribution_shift.py",
    ),
    "rnn": ChapterIntro(
        "A recurrent network carries a state along the sequence; gated cells (GRU, LSTM) let that state "
        "keep information over many steps. Language models are scored by perplexity on held-out text.",
        "c_t = f_t ⊙ c_{t−1} + i_t ⊙ c̃_t,   perplexity = exp(−(1/n) Σ log p(x_t | x_<t))",
        ("divekit.nn.rnn_cells", "divekit.nn.rnn", "divekit.models.char_lm", "divekit.metrics.perplexity"),
        "notebooks/05_modern_rnns.py",
    ),
    "mt": ChapterIntro(
        "An encoder reads the English sentence into states, a decoder writes French one word at a time, "
        "and beam search keeps the k best partial translations; corpus BLEU scores them against references.",
        "score(y) = log P(y | x) / |y|^α",
        ("divekit.models.seq2seq", "divekit.decode.beam", "divekit.metrics.bleu"),
        "notebooks/06_machine_translation.py",
    ),
    "attention": ChapterIntro(
        "Attention lets every output position read every input position, weighted by how well its query "
        "matches their keys; the Transformer is built from this operation alone.",
        "Attention(Q, K, V) = softmax(Q Kᵀ / √d) V",
        ("divekit.nn.attention", "divekit.nn.multihead_attention", "divekit.models.transformer"),
        "notebooks/07_attention_transformer.py",
    ),
    "cnn": ChapterIntro(
        "A convolution slides one small kernel over the image, so a layer has few weights and sees local "
        "patterns anywhere; deeper networks stack such layers, with residual connections to train.",
        "Y[i, j] = Σ_a Σ_b X[i + a, j + b] · K[a, b] + b,   output size ⌊(H + 2p − k) / s⌋ + 1",
        ("divekit.nn.conv", "divekit.nn.pooling", "divekit.models.resnet"),
        "notebooks/08_cnns.py",
    ),
}

# Parts by the experiment whose section they open before.
PARTS: dict[str, PartIntro] = {
    "bert-labels": PartIntro(
        "Transformers today: GPT and BERT",
        "GPT keeps the Transformer's decoder only: causal self-attention over the text so far, trained to "
        "predict the next token (divekit train gpt-lm). BERT keeps the encoder only: it reads the whole "
        "sentence, learns by restoring hidden words from unlabelled text, and is then fine-tuned on a task "
        "with few labels. The experiments below measure what that pretraining buys when labels are few, "
        "and how the GPT fares against the LSTM as a language model at equal training time.",
        "GPT: max Σₜ log P(xₜ | x₁ … xₜ₋₁);   BERT: max Σ over i ∈ M of log P(xᵢ | x with the positions in M masked)",
        ("divekit.models.gpt", "divekit.models.bert", "divekit.tasks.masked_lm", "divekit.tasks.question"),
    ),
}
