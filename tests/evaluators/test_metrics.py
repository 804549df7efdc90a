"""Quality metrics (``--metric``): the built-ins, a user's function, and what the engine
maximises for each."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from autocompress.core.errors import AutocompressError, ModelError
from autocompress.evaluators import evaluate, get_metric
from autocompress.evaluators.metrics import CallableMetric


class Output:
    """A ModelOutput stand-in: carries ``.logits``."""

    def __init__(self, logits):
        self.logits = logits


class Wrapped(nn.Module):
    def __init__(self, inner, as_dict=False):
        super().__init__()
        self.inner, self.as_dict = inner, as_dict

    def forward(self, input_ids=None, attention_mask=None, x=None):
        logits = self.inner(x if x is not None else input_ids.float())
        return {"logits": logits} if self.as_dict else Output(logits)


def _model():
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 4))
        model.bias.zero_()
    return model


def test_accuracy_and_top5_read_tensors_model_outputs_and_dict_batches():
    x = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0], [3.0, 0, 0, 0]])
    y = torch.tensor([0, 1, 0, 0])  # the third is wrong
    assert evaluate(_model(), [(x, y)]) == 75.0
    assert evaluate(_model(), [(x, y)], "top5") == 100.0
    dict_batches = [{"input_ids": x, "attention_mask": torch.ones(4, 4), "labels": y}]
    assert evaluate(Wrapped(_model()), dict_batches) == 75.0
    assert evaluate(Wrapped(_model(), as_dict=True), dict_batches) == 75.0


def test_perplexity_is_the_exp_of_the_shifted_token_cross_entropy_and_lower_is_better():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    labels[0, 3] = -100  # left out, as Hugging Face collators mark padding
    metric = get_metric("perplexity")
    metric.update(Output(logits), labels)
    expected = math.exp(float(F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1),
                                              ignore_index=-100)))
    assert metric.result() == pytest.approx(expected, rel=1e-5)
    assert not metric.higher_is_better and metric.score(12.0) == -12.0 and metric.value(-12.0) == 12.0
    with pytest.raises(ModelError, match="perplexity needs language-model logits"):
        metric.update(torch.randn(2, 7), torch.randint(0, 7, (2,)))


def test_neg_loss_is_minus_the_mean_cross_entropy_over_samples():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    metric = get_metric("neg_loss")
    metric.update(logits[:2], y[:2])
    metric.update(logits[2:], y[2:])
    assert metric.result() == pytest.approx(-float(F.cross_entropy(logits, y)), rel=1e-6)
    assert metric.higher_is_better


def test_a_function_metric_sees_the_raw_output_and_is_weighted_by_batch_size():
    seen = []

    def first_logit(output, target):
        seen.append(type(output).__name__)
        return float(output.logits[:, 0].mean())

    metric = CallableMetric(first_logit)
    metric.update(Output(torch.full((1, 3), 4.0)), torch.zeros(1))
    metric.update(Output(torch.full((3, 3), 0.0)), torch.zeros(3))
    assert metric.result() == 1.0 and seen == ["Output", "Output"]  # (4 * 1 + 0 * 3) / 4
    assert metric.spec.endswith(":test_a_function_metric_sees_the_raw_output_and_is_weighted_by_batch_size."
                                "<locals>.first_logit")
    first_logit.higher_is_better = False
    assert not CallableMetric(first_logit).higher_is_better


def test_an_output_without_logits_names_its_type_and_the_option():
    class Odd(nn.Module):
        def forward(self, x):
            return object()

    with pytest.raises(ModelError, match=r"returns a builtins\.object.*--metric pkg\.module:fn"):
        evaluate(Odd(), [(torch.zeros(2, 4), torch.zeros(2))])


def test_unknown_metric_names_the_choices():
    with pytest.raises(AutocompressError, match="'f1' is not a metric; use one of accuracy, top5, perplexity"):
        get_metric("f1")
