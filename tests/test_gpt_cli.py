"""``divekit train gpt-lm``, ``divekit sample`` and ``divekit lm-evaluate`` on tiny real checkpoints."""

from __future__ import annotations

import math
import re

import pytest

from divekit.cli import main
from divekit.decode.sampling import generate
from divekit.tasks.language_model import load_language_model

from conftest import data_dir_with

pytestmark = [pytest.mark.skipif(data_dir_with("timemachine.txt") is None, reason="The Time Machine not found"),
              pytest.mark.usefixtures("one_thread")]

# A window of 32 with 16 kept: the 64-character dynamic segments below make the window slide mid-call.
TINY_GPT = ["-o", "d_model=16", "-o", "num_heads=2", "-o", "layers=1", "-o", "ffn_hidden=32", "-o", "max_len=32",
            "-o", "num_steps=32", "-o", "context_keep=16"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A gpt-lm and an lstm-lm, each trained for one short epoch on 3,000 characters."""
    root = tmp_path_factory.mktemp("lm-runs")
    common = ["--epochs", "1", "--limit", "3000", "--batch-size", "4", "--threads", "1"]
    assert main(["train", "gpt-lm", *common, *TINY_GPT, "--out", str(root / "gpt")]) == 0
    assert main(["train", "lstm-lm", *common, "-o", "hidden=16", "-o", "embedding=8", "--out", str(root / "lstm")]) == 0
    return root / "gpt" / "best.pt", root / "lstm" / "best.pt"


def test_sample_continues_the_prefix_greedily(checkpoints, capsys):
    gpt, _ = checkpoints
    capsys.readouterr()
    assert main(["sample", "gpt-lm", "--checkpoint", str(gpt), "--prefix", "the time", "--length", "60",
                 "--temperature", "0"]) == 0
    model, vocab, ckpt = load_language_model(gpt)
    assert ckpt["model_config"]["max_len"] == 32  # 68 characters: the window slides while sampling
    expected = "the time" + "".join(vocab.to_tokens(generate(model, vocab[list("the time")], 60, temperature=0)))
    assert capsys.readouterr().out == expected + "\n"


def _perplexity(out: str, method: str) -> list[float]:
    return [float(v) for v in re.findall(rf"{re.escape(method)}\s+perplexity ([\d.]+)", out)]


def test_lm_evaluate_scores_gpt_dynamically_and_in_an_ensemble_with_an_lstm(checkpoints, capsys):
    gpt, lstm = checkpoints
    capsys.readouterr()
    assert main(["lm-evaluate", "--checkpoint", str(gpt), str(lstm), "--split", "val", "--dynamic-lr", "1e-3",
                 "--segment", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpt-lm (") and "lstm-lm (" in out and "ensemble of the 2 models" in out
    static = _perplexity(out, "static, one stream")  # gpt, lstm, ensemble
    dynamic = _perplexity(out, "dynamic, lr 0.001")
    assert len(static) == len(dynamic) == 3 and all(math.isfinite(p) for p in static + dynamic)
    assert dynamic[0] < static[0]  # the one-epoch GPT still has much to learn from the text it reads
    # The mixture's nll per token is at most the mean of the members' (Jensen): so is its log-perplexity.
    assert math.log(static[2]) <= (math.log(static[0]) + math.log(static[1])) / 2 + 1e-9
    assert main(["lm-evaluate", "lstm-lm", "--checkpoint", str(gpt), "--dynamic-lr"]) == 4  # another model's


def test_bad_options_are_one_line_errors(capsys):
    assert main(["train", "gpt-lm", "-o", "num_heads=3", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "divisible by num_heads" in err
    assert main(["train", "gpt-lm", "-o", "num_steps=256", "--epochs", "1"]) == 2
    assert "exceeds max_len" in capsys.readouterr().err
