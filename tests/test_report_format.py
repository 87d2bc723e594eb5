"""The report's formatting layer: units chosen by a column's or a metric's name."""

from __future__ import annotations

import pytest

from divekit.report.formatting import (
    MISSING,
    Cell,
    format_metrics,
    format_table,
    format_value,
    humanise,
)


@pytest.mark.parametrize(("name", "value", "text"), [
    ("test acc.", 0.93271, "93.27%"),
    ("best_test_accuracy", 0.8465, "84.65%"),
    ("recall", 0.764, "76.40%"),
    ("of matmul peak", 0.6321, "63%"),          # the CNN and the attention tables use this one name
    ("gap", 0.0441, "4.41 pts"),
    ("BLEU beam 4", 26.3712, "26.37"),
    ("test_bleu_greedy", 12.8003, "12.80"),
    ("test ppl", 3.7512, "3.75"),
    ("gru-lm_torch_test_perplexity", 6.68063, "6.68"),
    ("images/s", 1519.4, "1,519"),
    ("train tokens/s", 200516.2, "200,516"),
    ("GFLOP/s", 280.4, "280"),
    ("transformer_tokens_per_s", 488.8, "489"),
    ("transformer_decode_per_s_no_cache", 10.38, "10"),
    ("parameters", 2796586, "2,796,586"),
    ("test images", 1000, "1,000"),
    ("train s", 3203.46, "3,203.5"),
    ("MFLOPs/image", 0.581822, "0.6"),
    ("layer 1", 1.7001568523270168e-78, "1.70e-78"),
    ("test MSE", 0.010676611563294653, "0.01068"),
    ("lambda", 100.0, "100"),
    ("degree", 3, "3"),
])
def test_numbers_read_in_the_unit_of_their_quantity(name, value, text):
    assert format_value(name, value) == Cell(text, True)


def test_missing_booleans_and_text():
    assert format_value("test acc.", None) == Cell(MISSING, True)
    assert format_value("test acc.", float("nan")) == Cell(MISSING, True)
    assert format_value("decode sent/s, no cache", "-") == Cell(MISSING, True)
    assert format_value("agree", True) == Cell("yes", False)
    assert format_value("precision", "fp32") == Cell("fp32", False)
    assert format_value("English", "who said that ?") == Cell("who said that ?", False)


@pytest.mark.parametrize("text", ["81.3% ± 0.2", "+5.3 ± 4.3", "0 of 10", "282 ± 113", "1,054", "-0.0 ± 0.1",
                                  "+1.2 ± 0.4 pts", "87.5%"])
def test_preformatted_numbers_are_right_aligned(text):
    assert format_value("x", text) == Cell(text, True)


@pytest.mark.parametrize("text", ["15 degrees", "5.015, 1.185, -3.405", "6x6", "yes"])
def test_text_that_starts_with_a_digit_stays_text(text):
    assert not format_value("x", text).numeric


def test_table_aligns_columns_and_keeps_row_labels_left():
    t = format_table("t", ["hidden layers", "normalization", "test acc.", "train s"],
                     [[2, "none", 0.5427, 0.2232], [5, "BatchNorm (scratch)", None, 0.31]])
    assert [c.numeric for c in t.columns] == [False, False, True, True]
    assert t.rows[0][0] == Cell("2", False)  # a row label, even when it is a number
    assert [c.text for c in t.rows[0]] == ["2", "none", "54.27%", "0.2"]
    assert t.rows[1][2] == Cell(MISSING, True)


def test_a_column_of_only_missing_values_is_not_numeric():
    t = format_table(None, ["model", "note"], [["a", None]])
    assert not t.columns[1].numeric


@pytest.mark.parametrize(("key", "label"), [
    ("best_test_accuracy", "Best test accuracy"),
    ("test_accuracy_depth10_scratch_bn", "Test accuracy depth 10 scratch batch norm"),
    ("seq2seq_bleu_beam4", "Seq2seq BLEU beam 4"),
    ("acc_BiLSTM_tagger", "Accuracy BiLSTM tagger"),
    ("matmul_gflops_fp32", "Matmul GFLOP/s fp32"),
])
def test_metric_keys_are_humanised(key, label):
    assert humanise(key) == label


def test_metrics_keep_order_and_units():
    assert format_metrics({"best_test_accuracy": 0.9, "training_examples": 12000}) == [
        ("Best test accuracy", Cell("90.00%", True)), ("Training examples", Cell("12,000", True))]
