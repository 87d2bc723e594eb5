"""Bidirectional RNNs: why they cannot generate, where they help, and an ELMo-style layer mix.

1. Leakage: a bidirectional GRU trained as a next-character model reaches a held-out "perplexity"
   near 1, because its backward direction has already read the character it predicts; a causal GRU
   of the same size cannot. The number is meaningless for generation, which has no future to read.
2. Labelling: the text with its spaces removed, one tag per letter: 1 if the letter starts a word.
   A causal LSTM must decide before seeing the rest of the word; a bidirectional one sees both sides.
3. ELMo mix: a deep biLM (separate forward and backward LMs, so no leakage) is pretrained on the
   same letter stream, frozen, and a linear tagger is fitted on its learned layer mix or on its top
   layer only. The learned softmax weights per layer are plotted.
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import divekit.plots  # noqa: F401  (chooses matplotlib's backend: files, or inline in Jupyter)
from divekit import seeding
from divekit.data.timemachine import load_lm_data  # noqa: E402
from divekit.models.bilstm_tagger import BiRNNTagger, DeepBiLM, FeatureTagger  # noqa: E402
from divekit.models.char_lm import CharLM, CharLMConfig  # noqa: E402
from divekit.registry import register_experiment  # noqa: E402


def word_start_tags(tokens: Tensor, space: int) -> tuple[Tensor, Tensor]:
    """Drop the spaces of ``tokens (N,)``; tag each remaining token 1 if it starts a word, else 0."""
    keep = tokens != space
    before = torch.cat([torch.tensor([True]), tokens[:-1] == space])  # preceded by a space (or first)
    return tokens[keep], before[keep].long()


def random_windows(n: int, batch: int, steps: int, g: torch.Generator) -> Tensor:
    """Positions ``(batch, steps)`` of random windows in a stream of ``n`` tokens."""
    starts = torch.randint(n - steps, (batch, 1), generator=g)
    return starts + torch.arange(steps)


def fit(model: nn.Module, loss_fn, n: int, *, steps: int, batch: int, window: int, seed: int,
        lr: float = 5e-3) -> None:
    """Adam on random windows of a stream of length ``n``; ``loss_fn(model, positions)`` gives the loss."""
    g = seeding.generator(seed, "order")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(steps):
        loss = loss_fn(model, random_windows(n, batch, window, g))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()


def _chunks(stream: Tensor, window: int) -> Tensor:
    """Non-overlapping windows ``(n // window, window)`` covering the stream's head."""
    return stream[: stream.numel() // window * window].view(-1, window)


@torch.no_grad()
def window_perplexity(model: CharLM, block: Tensor, window: int) -> float:
    """Next-character perplexity over non-overlapping windows of ``block``, fresh state per window."""
    model.eval()
    x = _chunks(block, window + 1)
    logits, _ = model(x[:, :-1])
    return math.exp(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)).item())


@torch.no_grad()
def tag_accuracy(model: nn.Module, letters: Tensor, tags: Tensor, window: int) -> float:
    model.eval()
    pred = model(_chunks(letters, window)).argmax(-1)
    return (pred == _chunks(tags, window)).float().mean().item()


def _weights_plot(path, weights: list[float]) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(range(len(weights)), weights, color="tab:blue")
    ax.set_xticks(range(len(weights)), ["embedding"] + [f"layer {i}" for i in range(1, len(weights))])
    ax.set(ylabel="softmax weight", title="learned ELMo-style layer weights")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@register_experiment(
    "bidirectional", chapter="rnn", title="Bidirectional RNNs and an ELMo-style layer mix",
    description="BiRNN leakage as an LM, word-start tagging, layer mix vs top layer",
    modes=("Quick: 120 training steps of 48-unit models; full: 1,500 steps of 128-unit models, where the "
           "layer weights settle."),
)
def run(ctx) -> dict:
    threads = torch.get_num_threads()
    # Small recurrent steps are dominated by thread synchronisation: one thread is many times faster.
    torch.set_num_threads(1)
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx) -> dict:
    seeding.seed_global(ctx.seed, "init")
    data = load_lm_data("char")
    v = len(data.vocab)
    steps, hidden, window = ctx.pick(120, 1500), ctx.pick(48, 128), ctx.pick(48, 96)
    start = time.perf_counter()

    def lm_loss(model, pos):
        logits, _ = model(data.train[pos])
        return F.cross_entropy(logits.reshape(-1, v), data.train[pos + 1].reshape(-1))

    leak = {}
    for name, bi in (("causal GRU", False), ("bidirectional GRU", True)):
        model = CharLM(CharLMConfig(kind="gru", vocab_size=v, hidden=hidden, bidirectional=bi))
        fit(model, lm_loss, data.train.numel() - 1, steps=steps, batch=32, window=window, seed=ctx.seed)
        leak[name] = window_perplexity(model, data.val, window)

    space = data.vocab[" "]
    train_x, train_y = word_start_tags(data.train, space)
    test_x, test_y = word_start_tags(data.test, space)

    def tag_loss(model, pos):
        logits = model(train_x[pos])
        return F.cross_entropy(logits.reshape(-1, 2), train_y[pos].reshape(-1))

    acc = {"always 0 (majority)": 1 - test_y.float().mean().item()}
    for name, bi in (("causal LSTM tagger", False), ("BiLSTM tagger", True)):
        tagger = BiRNNTagger(v, 2, hidden=hidden, bidirectional=bi)
        fit(tagger, tag_loss, train_x.numel(), steps=steps, batch=32, window=window, seed=ctx.seed)
        acc[name] = tag_accuracy(tagger, test_x, test_y, window)

    bilm = DeepBiLM(v, hidden=hidden, layers=2)
    fit(bilm, lambda m, pos: m.lm_loss(train_x[pos]), train_x.numel(), steps=steps, batch=32, window=window,
        seed=ctx.seed)
    mix_weights: list[float] = []
    for name, mix in (("biLM top layer + linear", False), ("biLM ELMo mix + linear", True)):
        tagger = FeatureTagger(bilm, 2, mix=mix)
        fit(tagger, tag_loss, train_x.numel(), steps=steps, batch=32, window=window, seed=ctx.seed, lr=1e-2)
        acc[name] = tag_accuracy(tagger, test_x, test_y, window)
        if mix:
            mix_weights = tagger.mix.weights().tolist()
    _weights_plot(ctx.path("elmo_weights.png"), mix_weights)

    rows = [[name, round(p, 3)] for name, p in leak.items()]
    tag_rows = [[name, round(a, 4)] for name, a in acc.items()]
    return {
        "summary": (
            f"A bidirectional GRU trained to predict the next character scores a validation perplexity of "
            f"{leak['bidirectional GRU']:.2f} against {leak['causal GRU']:.2f} for the causal GRU: it reads the "
            f"answer through its backward direction, so the number says nothing about generation, where the "
            f"future does not exist yet. Restoring word starts in the text without spaces is where the "
            f"backward context belongs: test accuracy {acc['BiLSTM tagger']:.3f} bidirectional vs "
            f"{acc['causal LSTM tagger']:.3f} causal. A linear tagger on a frozen deep biLM reaches "
            f"{acc['biLM ELMo mix + linear']:.3f} with the learned layer mix and {acc['biLM top layer + linear']:.3f} "
            f"with the top layer only ({time.perf_counter() - start:.0f} s in all)."
        ),
        "metrics": {"bigru_val_perplexity": leak["bidirectional GRU"], "gru_val_perplexity": leak["causal GRU"],
                    **{f"acc_{k.split(' (')[0].replace(' ', '_').replace('+', 'plus')}": a for k, a in acc.items()}},
        "tables": [
            {"title": "Next-character validation perplexity (fresh state per window)",
             "columns": ["model", "perplexity"], "rows": rows},
            {"title": "Word-start tagging on the test block without spaces",
             "columns": ["model", "accuracy"], "rows": tag_rows},
            {"title": "Learned layer weights of the ELMo-style mix",
             "columns": ["layer", "weight"],
             "rows": [[i, round(w, 4)] for i, w in enumerate(mix_weights)]},
        ],
        "figures": [{"file": "elmo_weights.png", "caption": "Softmax-normalised layer weights learned by the mix "
                                                           "(0: embedding, then biLM layers)."}],
    }
